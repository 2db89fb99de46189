"""compose/: valid against the compose specification's JSON schema (from the compose-go module
`make setup` fetches), and consistent as shipped: paths resolve from compose/, every command is
one the CLI accepts, every service is health-checked and waited for, the one-shot init rolls out
the versions the workers serve, Prometheus scrapes every process, Kafka listens for containers
and for the host."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from modelyard.graph import load_spec
from modelyard.keys import ensure_local_keys

from tests.support.deploy import (
    COMPOSE_DIR,
    COMPOSE_SPEC_MODULE,
    DOCKERFILE,
    ROOT,
    cli_problem,
    compose_spec_schema,
    exec_form,
    parse_dockerfile,
)

BASE = COMPOSE_DIR / "docker-compose.yml"
FILES = [BASE, COMPOSE_DIR / "docker-compose.gpu.yml"]
COMPOSE: dict[str, Any] = yaml.safe_load(BASE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
MODELYARD = {n: s for n, s in SERVICES.items() if str(s.get("image", "")).startswith("modelyard:")}
LONG_RUNNING = {n: s for n, s in MODELYARD.items() if s.get("restart") != "no"}
METRICS_PORTS = {
    "serve": 9100,
    "router": 9200,
    "shadow-audit": 9300,
    "audit-sink": 9400,
    "monitor": 9500,
}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_valid_against_the_compose_specification(path: Path) -> None:
    schema_path = compose_spec_schema()
    if schema_path is None:
        reason = f"compose-spec.json not found: `make setup` fetches {COMPOSE_SPEC_MODULE}"
        if os.environ.get("CI") or os.environ.get("MODELYARD_DEPLOY_CHECK"):
            pytest.fail(reason)
        pytest.skip(reason)
    schema = json.loads(schema_path.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(yaml.safe_load(path.read_text())), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_gpu_override_names_services_of_the_base_file() -> None:
    override = yaml.safe_load((COMPOSE_DIR / "docker-compose.gpu.yml").read_text())
    assert set(override["services"]) <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(MODELYARD))
def test_every_command_is_one_the_cli_accepts(name: str) -> None:
    command = MODELYARD[name]["command"]
    assert cli_problem(command) is None, cli_problem(command)


def _volumes() -> list[tuple[str, str]]:
    return [
        (name, str(v)) for name, s in SERVICES.items() for v in s.get("volumes", []) if ":" in v
    ]


@pytest.mark.parametrize(("service", "volume"), _volumes())
def test_bind_mounts_resolve_from_the_compose_folder(service: str, volume: str) -> None:
    source = volume.split(":", maxsplit=1)[0]
    if not source.startswith((".", "/")):
        assert source in COMPOSE.get("volumes", {}), f"{service}: undeclared volume {source}"
        return
    path = (COMPOSE_DIR / source).resolve()
    assert path.exists(), f"{service}: {source} resolves to {path}, which does not exist"
    assert ROOT in path.parents or path == ROOT


def test_build_context_is_the_repository_root() -> None:
    for name, service in MODELYARD.items():
        build = service["build"]
        assert (COMPOSE_DIR / build["context"]).resolve() == ROOT, name
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE, name


def test_every_service_is_health_checked() -> None:
    image_checks = parse_dockerfile()[1][-1].all("HEALTHCHECK")
    for name, service in SERVICES.items():
        check = service.get("healthcheck")
        if name in MODELYARD and service.get("restart") == "no":
            assert check == {"disable": True}, f"{name}: a one-shot job has no health"
        elif check is None:
            assert name in MODELYARD, f"{name}: no healthcheck"
            assert image_checks, f"{name}: relies on the image's HEALTHCHECK, which is gone"
        else:
            assert check.get("test"), name


def test_every_dependency_exists_and_is_waited_for() -> None:
    for name, service in SERVICES.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: a bare depends_on list waits for nothing"
        for target, spec in depends.items():
            assert target in SERVICES, f"{name} depends on unknown {target}"
            one_shot = SERVICES[target].get("restart") == "no"
            wanted = "service_completed_successfully" if one_shot else "service_healthy"
            assert spec["condition"] == wanted, f"{name} -> {target}"


def test_the_health_port_is_the_port_each_process_serves_metrics_on() -> None:
    for name, service in LONG_RUNNING.items():
        command = service["command"]
        port = METRICS_PORTS[command[0]]
        if "--metrics-port" in command:
            port = int(command[command.index("--metrics-port") + 1])
        env = service.get("environment", {})
        assert int(env.get("MODELYARD_METRICS_PORT", 9100)) == port, name


def test_init_rolls_out_exactly_the_versions_the_workers_serve() -> None:
    command = SERVICES["init"]["command"]
    assert command[0] == "init"
    versions = {command[i + 1] for i, word in enumerate(command) if word == "--version"}
    spec = load_spec(ROOT / "pipelines" / "docs.yaml")
    models = {name: stage.model for name, stage in spec.stages.items()}
    rolled = {f"{models[s]}:{v}" for s, v in (x.split("=") for x in versions)}
    assert {s.split("=")[0] for s in versions} == set(spec.stages)
    served = {s["command"][1] for s in LONG_RUNNING.values() if s["command"][0] == "serve"}
    assert served == rolled
    for name, service in LONG_RUNNING.items():
        assert "init" in service.get("depends_on", {}), f"{name} starts before init"


def test_prometheus_scrapes_every_process() -> None:
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    for name, service in LONG_RUNNING.items():
        env = service.get("environment", {})
        assert f"{name}:{env.get('MODELYARD_METRICS_PORT', 9100)}" in targets, name
    assert set(SERVICES["prometheus"]["volumes"][0].split(":")[:1]) == {"./prometheus.yml"}


def test_kafka_listens_for_containers_and_for_the_host() -> None:
    env = SERVICES["kafka"]["environment"]
    advertised = dict(x.split("://") for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    listeners = dict(x.split("://") for x in env["KAFKA_LISTENERS"].split(","))
    bootstrap = MODELYARD["router-docs"]["environment"]["MODELYARD_BOOTSTRAP"]
    assert bootstrap in advertised.values(), "containers' bootstrap is not advertised"
    host = [n for n, a in advertised.items() if a.startswith("localhost:")]
    assert len(host) == 1, "no listener advertised to the host"
    published = {p.split(":")[0]: p.split(":")[1] for p in SERVICES["kafka"]["ports"]}
    host_port = advertised[host[0]].split(":")[1]
    assert published[host_port] == listeners[host[0]].split(":")[-1]
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:4.")


def test_traces_go_to_the_otlp_backend_and_the_audit_store_is_postgres() -> None:
    for name, service in LONG_RUNNING.items():
        endpoint = service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint.split("//")[1].split(":")[0] in SERVICES, name
    assert SERVICES["postgres"]["image"].startswith("postgres:")


def test_image_healthcheck_reads_the_variable_compose_sets() -> None:
    check = parse_dockerfile()[1][-1].all("HEALTHCHECK")[0]
    assert "MODELYARD_METRICS_PORT" in " ".join(exec_form(check))


def test_the_monitor_signs_with_the_key_init_creates_and_reads_every_spec(tmp_path: Path) -> None:
    init = SERVICES["init"]["command"]
    keys_dir = Path(init[init.index("--keys-dir") + 1])
    created = ensure_local_keys(tmp_path)  # what init creates in --keys-dir on first use
    monitor = SERVICES["monitor"]
    env = {k: Path(v).relative_to(keys_dir) for k, v in monitor["environment"].items()
           if k in ("MODELYARD_WRITER_KEY", "MODELYARD_KEYRING")}  # fmt: skip
    assert env["MODELYARD_WRITER_KEY"] == created.monitor_key.relative_to(tmp_path)
    assert env["MODELYARD_KEYRING"] == created.keyring.relative_to(tmp_path)
    assert f"keys:{keys_dir}:ro" in monitor["volumes"]  # init is the only writer
    command = monitor["command"]
    specs = {command[i + 1] for i, word in enumerate(command) if word == "--spec"}
    routed = {s["command"][1] for s in LONG_RUNNING.values() if s["command"][0] == "router"}
    assert specs == routed
    assert "init" in monitor["depends_on"]  # the audit topic exists before it starts
