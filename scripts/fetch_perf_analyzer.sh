#!/usr/bin/env bash
# Triton's perf_analyzer, which tests/integration/test_perf_analyzer.py and `make bench` run
# against a stage, with the CUDA runtime library it links (it needs no GPU: without a driver it
# measures over gRPC all the same). Both come out of PyPI wheels pinned by version and SHA-256,
# fetched with `pip download --no-deps`, into .cache/perf_analyzer/<version>/ (bench/perf_analyzer.py
# finds them there). Its other library, libb64, is Debian's libb64-0d (scripts/setup.sh).
#
# Not through the uv lock: the last tritonclient wheels that ship bin/perf_analyzer (the
# manylinux ones, up to 2.60) pin numpy<2 and protobuf<5, which the workspace cannot take; and of
# those, 2.51.0's binary is the last that runs on Debian 12's glibc 2.36 (2.52 on need 2.38).
# The version must match PERF_ANALYZER_VERSION in bench/perf_analyzer.py.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=2.51.0
WHEEL=tritonclient-$VERSION-py3-none-manylinux1_x86_64.whl
WHEEL_SHA256=c485bb0123bdf310f90bc8b03d3489b28df2ffed55b30c7eee0b795b48113d52
CUDART=nvidia-cuda-runtime-cu12==12.9.79
CUDART_WHEEL=nvidia_cuda_runtime_cu12-12.9.79-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
CUDART_SHA256=25bba2dfb01d48a9b59ca474a1ac43c6ebf7011f1b0b8cc44f54eb6ac48a96c3
DEST=.cache/perf_analyzer/$VERSION

[ -f "$DEST/.complete" ] && exit 0
if [ "$(uname -sm)" != "Linux x86_64" ]; then
  echo "setup: perf_analyzer ships for Linux x86_64 only: its test will be skipped" >&2
  exit 0
fi
echo "setup: fetching perf_analyzer $VERSION and its CUDA runtime library from PyPI"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for spec in "tritonclient==$VERSION" "$CUDART"; do
  uv run --frozen python -m pip download -q --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --python-version 3.11 \
    -d "$work" "$spec"
done
(cd "$work" && printf '%s  %s\n%s  %s\n' "$WHEEL_SHA256" "$WHEEL" "$CUDART_SHA256" "$CUDART_WHEEL" |
  sha256sum --quiet -c -)
rm -rf "$DEST"
mkdir -p "$DEST/lib"
extract() {  # wheel member destination (no unzip on a bare machine: Python's zipfile)
  uv run --frozen python -c 'import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as w, w.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)' "$@"
}
extract "$work/$WHEEL" "tritonclient-$VERSION.data/data/bin/perf_analyzer" "$DEST/perf_analyzer"
extract "$work/$CUDART_WHEEL" nvidia/cuda_runtime/lib/libcudart.so.12 "$DEST/lib/libcudart.so.12"
chmod +x "$DEST/perf_analyzer"
touch "$DEST/.complete"
