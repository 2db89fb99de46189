"""The router's start-up check of a whole routing (test models, no I/O but files)."""

from __future__ import annotations

from pathlib import Path

import pytest
from modelyard.control import Canary, PipelineRouting, Shadow, StageRouting
from modelyard.control.deploy import check_routing
from modelyard.errors import ConfigError
from modelyard.graph import ContractError, parse_spec
from modelyard.repository.build import BuildContext
from modelyard.repository.store import ModelRepository

from tests.support.models import write_shout_version
from tests.support.onnx_models import write_affine_version

SPEC = parse_spec(
    """
pipeline: tp
version: 1
inputs: {text: {datatype: BYTES, shape: [-1]}}
stages:
  first: {model: shout, inputs: {text: request.text}}
outputs: {loud: first.shout}
""",
    "tp.yaml",
)


@pytest.fixture
def repo(tmp_path: Path) -> ModelRepository:
    ctx = BuildContext(root=tmp_path, cache=tmp_path / ".cache")
    write_shout_version(ctx, "1")
    write_shout_version(ctx, "2")
    write_affine_version(tmp_path, name="shout", version="3")  # same name, other tensors
    return ModelRepository(tmp_path)


def _routing(stage: StageRouting) -> PipelineRouting:
    return PipelineRouting(pipeline="tp", stages={"first": stage})


def test_fitting_versions_pass(repo: ModelRepository) -> None:
    routing = _routing(StageRouting(active="1", canary=Canary(version="2", weight=0.5)))
    check_routing(SPEC, repo, routing)


def test_a_stage_with_no_active_version_is_not_checked_yet(repo: ModelRepository) -> None:
    check_routing(SPEC, repo, _routing(StageRouting()))  # the latest (shout:3) would not fit


def test_a_version_that_breaks_the_tensor_contract_is_refused(repo: ModelRepository) -> None:
    routing = _routing(StageRouting(active="1", shadow=Shadow(version="3", sample_rate=1)))
    with pytest.raises(ContractError, match="first"):
        check_routing(SPEC, repo, routing)


def test_an_unknown_version_is_refused_with_the_stage(repo: ModelRepository) -> None:
    with pytest.raises(ConfigError, match=r"no version '9' of model 'shout'"):
        check_routing(SPEC, repo, _routing(StageRouting(active="9")))
