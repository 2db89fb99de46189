#!/usr/bin/env bash
# Installs everything modelyard needs on a fresh Debian machine: uv, the Debian packages
# (Apertium engines and language pairs, fonts for rendering sample documents, kcat for the
# wire-format doc's example, Java 17, Maven and PostgreSQL where missing), the locked Python environment and
# Apache Kafka's jars (the second broker engine) from Maven Central. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(apertium apertium-eng-spa apertium-eng-cat apertium-fr-es apertium-es-pt apertium-spa-ita fonts-dejavu-core kcat)
# libb64, which Triton's perf_analyzer links (scripts/fetch_perf_analyzer.sh fetches the rest).
APT_PACKAGES+=(libb64-0d)
# Apache Kafka runs on Java 17; Maven fetches its jars; the interop test compiles a Java client
# with javac. A machine that has them keeps its own.
{ command -v java && command -v javac; } >/dev/null 2>&1 || APT_PACKAGES+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || APT_PACKAGES+=(maven)
# PostgreSQL, the audit store's production database: the tests and `make bench` start a
# throwaway server of it (scripts/postgres.sh). A machine that has a server keeps its own.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || APT_PACKAGES+=(postgresql)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "setup: installing uv"
  python3 -m pip install -q uv
fi
uv sync --frozen --all-packages --group dev --group bench -q

# Apache Kafka's broker jars and their dependencies, as broker/kafka/pom.xml pins them. The
# version must match KAFKA_VERSION in libs/modelyard/src/modelyard/broker/kraft_config.py.
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' broker/kafka/pom.xml)
KAFKA_LIB=".cache/kafka/$KAFKA_VERSION/lib"
if [ ! -f "$KAFKA_LIB/.complete" ]; then
  echo "setup: fetching Apache Kafka $KAFKA_VERSION from Maven Central"
  rm -rf "$KAFKA_LIB"
  mvn -q -B -Dstyle.color=never -f broker/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$PWD/$KAFKA_LIB"
  touch "$KAFKA_LIB/.complete"
fi
# Triton's perf_analyzer and its CUDA runtime library, pinned wheels from PyPI (Linux x86_64).
bash scripts/fetch_perf_analyzer.sh
echo "setup: ok ($(uv run --frozen python --version))"

# --- deployment checks (issue 20) ----------------------------------------------------------------
# The compose specification's schema for tests/unit/test_deploy_compose.py, from the Go module
# proxy (make deploy-check fetches its heavier tools itself).
if command -v go >/dev/null 2>&1; then
  bash scripts/fetch_deploy_schemas.sh
else
  echo "setup: no Go toolchain: the compose schema test will be skipped (fails under CI)" >&2
fi

# --- a real OpenTelemetry Collector (issue 20) ---------------------------------------------------
# For tests/e2e/test_otel_collector.py: built once from the Go module proxy with this machine's Go
# and cached under .cache/otelcol (scripts/otelcol.sh); a failed build fails setup.
bash scripts/otelcol.sh >/dev/null
