"""deploy/docker/Dockerfile, read statically (no container engine runs here; `make
deploy-check` also lints it with hadolint): what it copies exists and reaches the build context,
the image runs as a non-root user, has a healthcheck on a real endpoint, and starts a real
`modelyard` command."""

from __future__ import annotations

import re

import pytest
from modelyard.router.settings import RouterSettings
from modelyard.stage.settings import StageSettings

from tests.support.deploy import (
    ROOT,
    cli_problem,
    copy_sources,
    dockerignore_excludes,
    dockerignore_patterns,
    exec_form,
    parse_dockerfile,
)

PREAMBLE, STAGES = parse_dockerfile()
FINAL = STAGES[-1]
STAGE_NAMES = {s.name for s in STAGES if s.name}


def _context_copies() -> list[tuple[int, str]]:
    return [
        (ins.line, src)
        for stage in STAGES
        for ins in stage.all("COPY")
        if "--from=" not in ins.value
        for src in copy_sources(ins)
    ]


@pytest.mark.parametrize(("line", "source"), _context_copies())
def test_every_copied_path_exists_and_is_in_the_build_context(line: int, source: str) -> None:
    matches = list(ROOT.glob(source))
    assert matches, f"Dockerfile line {line}: COPY {source}: nothing in the repository"
    patterns = dockerignore_patterns()
    for path in matches:
        rel = path.relative_to(ROOT).as_posix()
        assert not dockerignore_excludes(rel, patterns), f"line {line}: .dockerignore drops {rel}"


def test_dockerignore_keeps_the_build_context_small() -> None:
    patterns = dockerignore_patterns()
    for heavy in ("models/ocr", ".venv/bin", ".cache/models", "tests/unit", ".git/HEAD"):
        assert dockerignore_excludes(heavy, patterns), heavy


def test_copy_from_names_a_stage_of_this_file() -> None:
    for stage in STAGES:
        for ins in stage.all("COPY"):
            found = re.search(r"--from=(\S+)", ins.value)
            if found and not found.group(1).startswith("$"):
                assert found.group(1) in STAGE_NAMES | {"uv"}, f"line {ins.line}"


def test_both_flavours_have_a_base_and_the_image_builds_from_the_chosen_one() -> None:
    assert {"base-cpu", "base-cuda", "build", "models", "runtime"} <= STAGE_NAMES
    assert FINAL.base == "base-${FLAVOR}"
    assert any(i.value.startswith("FLAVOR=cpu") for i in PREAMBLE if i.keyword == "ARG")


def test_the_environment_is_the_locked_one() -> None:
    syncs = [i.value for s in STAGES for i in s.all("RUN") if "uv sync" in i.value]
    assert syncs
    assert all("--frozen" in s for s in syncs)
    build = next(s for s in STAGES if s.name == "build")
    assert any("--no-dev" in i.value for i in build.all("RUN"))
    assert any("--extra gpu" in i.value for i in build.all("RUN"))  # the CUDA flavour


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    users = FINAL.all("USER")
    assert users, "no USER in the final stage: the image would run as root"
    uid = users[-1].value.split(":")[0]
    assert uid.isdigit(), users[-1].value  # runAsNonRoot can check only a number
    assert int(uid) != 0, users[-1].value


def test_models_and_pipelines_are_where_the_settings_say() -> None:
    env = " ".join(i.value for i in FINAL.all("ENV"))
    assert "MODELYARD_REPOSITORY=/app/models" in env
    assert "repository" in StageSettings.model_fields
    assert "repository" in RouterSettings.model_fields
    copies = [i.value for i in FINAL.all("COPY")]
    assert any(c.endswith("/app/models") for c in copies)
    assert "pipelines /app/pipelines" in copies


def test_healthcheck_probes_the_readiness_endpoint_on_the_metrics_port() -> None:
    checks = FINAL.all("HEALTHCHECK")
    assert len(checks) == 1
    probe = " ".join(exec_form(checks[0]))
    assert "/healthz/ready" in probe
    assert "MODELYARD_METRICS_PORT" in probe
    default = StageSettings.model_fields["metrics_port"].default
    assert f"'{default}'" in probe


def test_entrypoint_and_default_command_are_a_real_modelyard_command() -> None:
    entrypoint = exec_form(FINAL.all("ENTRYPOINT")[-1])
    assert entrypoint[-1] == "modelyard"
    cmd = exec_form(FINAL.all("CMD")[-1])
    assert cli_problem(cmd) is None
