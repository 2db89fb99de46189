"""The model repository: resolving references, natural version order, verification at load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from modelyard.errors import ArtifactIntegrityError, ConfigError
from modelyard.repository.build import BuildContext
from modelyard.repository.manifest import MANIFEST_FILE
from modelyard.repository.store import ModelRepository, natural_key, parse_ref
from modelyard.runtimes.onnx import OnnxModel

from tests.support.onnx_models import affine_model, write_affine_version


@pytest.fixture
def repo(tmp_path: Path) -> ModelRepository:
    for version in ("2", "10", "1"):
        write_affine_version(tmp_path, version=version)
    write_affine_version(tmp_path, name="other", version="a")
    return ModelRepository(tmp_path)


def test_names_and_natural_version_order(repo: ModelRepository) -> None:
    assert repo.names() == ["affine", "other"]  # the hidden build cache is not a model
    assert repo.versions("affine") == ["1", "2", "10"]
    assert repo.versions("missing") == []


def test_natural_key() -> None:
    assert sorted(["1.10", "1.9", "1.9a", "10", "2"], key=natural_key) == [
        "1.9",
        "1.9a",
        "1.10",
        "2",
        "10",
    ]


def test_resolve_latest_and_explicit(repo: ModelRepository) -> None:
    assert repo.resolve("affine") == repo.root / "affine" / "10"
    assert repo.resolve("affine:2") == repo.root / "affine" / "2"
    assert repo.manifest("affine:2").ref == "affine:2"


def test_unknown_references_say_what_exists(repo: ModelRepository) -> None:
    with pytest.raises(ConfigError, match=r"versions: \['1', '2', '10'\]"):
        repo.resolve("affine:3")
    with pytest.raises(ConfigError, match=r"models: \['affine', 'other'\]"):
        repo.resolve("nope")


@pytest.mark.parametrize("ref", ["", "Affine", "affine:", "affine:..", "affine:1/2", "a b"])
def test_malformed_references(ref: str) -> None:
    with pytest.raises(ConfigError, match="expected 'name' or 'name:version'"):
        parse_ref(ref)


def test_load_verifies_and_serves(repo: ModelRepository) -> None:
    model = repo.load("affine:1")
    assert isinstance(model, OnnxModel)
    assert repo.verify("affine:1") == []
    (out,) = model.predict([{"x": np.ones((1, 3), np.float32)}])
    assert isinstance(out, dict)
    np.testing.assert_allclose(out["y"], [[3.0, 3.0, 3.0]])


def test_tampered_artifact_is_refused_naming_the_file(repo: ModelRepository) -> None:
    path = repo.resolve("affine:1") / "model.onnx"
    expected = repo.manifest("affine:1").artifacts[0].sha256
    affine_model(path, a=3.0)  # a valid model, just not the one the manifest pins
    with pytest.raises(ArtifactIntegrityError, match=f"model.onnx: expected sha256 {expected}"):
        repo.load("affine:1")
    (problem,) = repo.verify("affine:1")
    assert problem.startswith("model.onnx: expected sha256")
    model = repo.load("affine:1", verify=False)  # the operator's explicit override
    (out,) = model.predict([{"x": np.ones((1, 3), np.float32)}])
    assert isinstance(out, dict)
    np.testing.assert_allclose(out["y"], [[4.0, 4.0, 4.0]])


def test_missing_artifact_is_reported(repo: ModelRepository) -> None:
    (repo.resolve("affine:2") / "model.onnx").unlink()
    assert repo.verify("affine:2") == ["model.onnx: missing"]
    with pytest.raises(ArtifactIntegrityError, match=r"model\.onnx: missing"):
        repo.load("affine:2")


def test_extra_files_are_allowed(repo: ModelRepository) -> None:
    (repo.resolve("affine:2") / "README.md").write_text("notes")
    assert repo.verify("affine:2") == []


def test_missing_manifest_is_a_config_error(repo: ModelRepository) -> None:
    (repo.resolve("affine:10") / MANIFEST_FILE).unlink()
    with pytest.raises(ConfigError, match=f"no {MANIFEST_FILE}"):
        repo.load("affine")


def test_a_moved_version_is_refused(repo: ModelRepository) -> None:
    (repo.root / "affine" / "2").rename(repo.root / "affine" / "3")
    with pytest.raises(ConfigError, match="manifest says affine:2"):
        repo.manifest("affine:3")


def test_python_versions_load_through_their_entrypoint(tmp_path: Path) -> None:
    ctx = BuildContext(root=tmp_path, cache=tmp_path / ".cache")
    spec = [{"name": "t", "datatype": "BYTES", "shape": [-1]}]
    ctx.write_version(
        {
            "name": "echo",
            "version": "1",
            "runtime": "python",
            "entrypoint": "modelyard.runtimes.builtin:Echo",
            "inputs": spec,
            "outputs": spec,
        },
        files={"notes.txt": b"x"},
    )
    model = ModelRepository(tmp_path).load("echo")
    text = np.array([b"hi"], dtype=object)
    assert model.predict([{"t": text}]) == [{"t": text}]
