#!/usr/bin/env bash
# A real OpenTelemetry Collector for tests/e2e/test_otel_collector.py: the core OTLP receiver and
# the contrib file exporter (OTLP JSON lines the test reads back), built once with the
# OpenTelemetry Collector Builder from the Go module proxy and the machine's Go, cached under
# .cache/otelcol/<version>/ (Go's module and build caches beside it, kept between runs). Prints
# the binary's path as its last line; fails, loudly, when it cannot build it. `make setup` runs it.
#
#   scripts/otelcol.sh          build it unless cached, print its path
#   scripts/otelcol.sh --path   print its path if it is built, else fail (the tests ask this way)
#
# Cold (empty caches), on 2 busy cores: 7.5 min wall, 3 min user + 40 s system CPU; a 36 MiB
# binary; the caches it leaves take 1.3 GB (modules 580 MB, build cache 700 MB). A warm call
# returns at once. The build is keyed by the version and by this manifest: change either and
# the next call rebuilds (in seconds, from the caches).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=v0.165.0  # the collector's release line: builder, otlpreceiver, fileexporter
STABLE=v1.71.0    # the same release's stable modules (confmap providers)

manifest() {
  cat <<EOF
dist:
  name: otelcol-modelyard
  description: modelyard's test collector (OTLP in, OTLP JSON lines to a file out)
  version: ${VERSION#v}
  output_path: src
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver $VERSION
exporters:
  - gomod: github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter $VERSION
providers:  # file: --config; env: the default scheme, which the collector requires
  - gomod: go.opentelemetry.io/collector/confmap/provider/envprovider $STABLE
  - gomod: go.opentelemetry.io/collector/confmap/provider/fileprovider $STABLE
EOF
}

DIR="$PWD/.cache/otelcol/$VERSION"
BIN="$DIR/otelcol-modelyard"
KEY=$(manifest | sha256sum | cut -d' ' -f1)

if [ -x "$BIN" ] && [ "$(cat "$DIR/.key" 2>/dev/null)" = "$KEY" ]; then
  echo "$BIN"
  exit 0
fi
if [ "${1:-}" = "--path" ]; then
  echo "otelcol.sh: the collector $VERSION is not built: run make setup (or scripts/otelcol.sh)" >&2
  exit 1
fi
command -v go >/dev/null 2>&1 || { echo "otelcol.sh: no Go toolchain: cannot build the collector" >&2; exit 1; }

echo "setup: building the OpenTelemetry Collector $VERSION from the Go module proxy (once)" >&2
rm -rf "$DIR/src" "$BIN" "$DIR/.key"
mkdir -p "$DIR"
manifest >"$DIR/builder.yaml"
export GOPATH="$PWD/.cache/otelcol/go" GOMODCACHE="$PWD/.cache/otelcol/go/pkg/mod"
export GOCACHE="$PWD/.cache/otelcol/go-build" GOBIN="$DIR" GOFLAGS=-mod=mod CGO_ENABLED=0
start=$SECONDS
nice -n 10 go install "go.opentelemetry.io/collector/cmd/builder@$VERSION"
# The builder compiles with -trimpath and -ldflags='-s -w' (stripped) unless told otherwise.
# Its `go mod tidy` also resolves the imports of the components' own tests, and one of those
# (the file exporter's, contrib's otlpencodingextension) is refused by the module proxy (403);
# -e lets tidy finish without it (GOFLAGS entries apply only to the go commands that know them),
# and the build itself never imports it.
(cd "$DIR" && GOFLAGS="-mod=mod -e" nice -n 10 ./builder --config builder.yaml >build.log 2>&1) || {
  echo "otelcol.sh: the collector build failed; the builder's log ($DIR/build.log) ends:" >&2
  tail -n 40 "$DIR/build.log" >&2
  exit 1
}
mv "$DIR/src/otelcol-modelyard" "$BIN"
"$BIN" --version >/dev/null  # it runs
echo "$KEY" >"$DIR/.key"
echo "setup: collector built in $((SECONDS - start)) s ($(du -h "$BIN" | cut -f1)): $BIN" >&2
echo "$BIN"
