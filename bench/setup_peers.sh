#!/usr/bin/env bash
# Install the benchmark peers that cannot live in the workspace lockfile.
#
# MLServer 1.7.1 pins dependencies that conflict with ours (protobuf/grpcio/fastapi ranges), so
# instead of a `bench` dependency group it goes into an isolated, gitignored venv and runs as a
# subprocess. quixstreams does fit the lockfile and comes from the `bench` dependency group.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.bench/mlserver-venv
if [[ -x "$VENV/bin/mlserver" ]] && "$VENV/bin/python" -c "import mlserver" 2>/dev/null; then
  echo "mlserver venv ready: $VENV"
  exit 0
fi
mkdir -p .bench
uv venv --quiet --python "${MLSERVER_PYTHON:-3.11}" "$VENV"
uv pip install --quiet --python "$VENV/bin/python" "mlserver==1.7.1"
"$VENV/bin/python" -c "import mlserver; print('mlserver', mlserver.__version__, 'in $VENV')"
