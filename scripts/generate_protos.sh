#!/usr/bin/env bash
# Regenerates the committed Python code for every .proto under protos/ (`make generate`).
#
# Output lands next to the hand-written code (`protos/modelyard/api/oip/v2/x.proto` becomes
# `modelyard.api.oip.v2.x_pb2`), because `-I protos` mirrors the import path and generated imports
# need no rewriting. The generator is the pinned grpcio-tools of the dev group, and the output is
# deterministic, so `make generate && git diff --exit-code` proves the committed code is fresh.
#
# Set PYTHON to use another interpreter than `uv run --frozen python`.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=libs/modelyard/src
PKG_ROOT=$OUT/modelyard
if [[ -n "${PYTHON:-}" ]]; then
  read -r -a py <<<"$PYTHON"
else
  py=(uv run --frozen python)
fi

# Stable order and byte-identical output whatever the locale or filesystem.
export LC_ALL=C
mapfile -t protos < <(find protos -name '*.proto' -type f | sort)
if ((${#protos[@]} == 0)); then
  echo "generate: no .proto files under protos/" >&2
  exit 1
fi

# Generated files are owned by this script: drop them all first so a deleted .proto leaves
# nothing stale behind.
find "$PKG_ROOT" -type f \( -name '*_pb2.py' -o -name '*_pb2.pyi' -o -name '*_pb2_grpc.py' \) -delete

"${py[@]}" -m grpc_tools.protoc -I protos \
  --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" "${protos[@]}"

for proto in "${protos[@]}"; do
  rel=${proto#protos/}
  module=$OUT/${rel%.proto}_pb2.py

  # Every directory between the package root and the module must be a regular package.
  dir=$(dirname "$module")
  while [[ "$dir" != "$PKG_ROOT" && "$dir" == "$PKG_ROOT"/* ]]; do
    [[ -f "$dir/__init__.py" ]] || printf '"""Generated from protos/ by scripts/generate_protos.sh."""\n' >"$dir/__init__.py"
    dir=$(dirname "$dir")
  done

  # The OIP v2 proto must use `package inference;` for wire compatibility, so its symbols
  # (inference.ModelInferRequest...) are the same as those of tritonclient, KServe and MLServer
  # stubs; two such modules in protobuf's default descriptor pool make the second import fail
  # with "duplicate symbol". A private pool lets modelyard and those clients share a process.
  # (Consequence: no other .proto may import an `inference` proto.)
  if grep -q '^package inference;' "$proto"; then
    sed -i 's/^DESCRIPTOR = _descriptor_pool\.Default()\.AddSerializedFile(/DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile(/' "$module"
    grep -q '_descriptor_pool\.DescriptorPool()\.AddSerializedFile(' "$module" || {
      echo "generate: could not move $module to a private descriptor pool" >&2
      exit 1
    }
  fi
done

echo "generate: ${#protos[@]} proto file(s) -> $OUT"
