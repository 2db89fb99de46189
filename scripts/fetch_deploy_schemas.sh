#!/usr/bin/env bash
# The compose specification's JSON schema that tests/unit/test_deploy_compose.py validates
# compose/ against: it ships in compose-go (the library docker compose itself loads files
# with), fetched at a pinned version through the Go module proxy into Go's module cache.
# The version must match COMPOSE_SPEC_MODULE in tests/support/deploy.py.
set -euo pipefail
MODULE=github.com/compose-spec/compose-go/v2@v2.16.2
dir=$(go env GOMODCACHE)/$MODULE
if [ ! -f "$dir/schema/compose-spec.json" ]; then
  echo "setup: fetching the compose specification's schema ($MODULE)"
  (cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod go mod download "$MODULE")
fi
