"""Clients written without modelyard's library, against Apache Kafka and a real `langid:2` stage.

- Debian's kcat (librdkafka 2.0.2): the two commands of docs/wire-format.md's example, taken
  from the doc and run as written (only the bootstrap address is this test's broker).
- Apache Kafka's Java client: tests/interop/java/OipRoundTrip.java, compiled with ``javac`` into
  a temporary folder, produces an OIP JSON request and reads its reply.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from modelyard.broker import KafkaCluster
from modelyard.repository.build import BuildContext
from modelyard_langid.build import build as build_langid

from tests.integration.conftest import KAFKA_LIB, MODEL_CACHE, broker_engine
from tests.support.stage import StageProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WIRE_FORMAT = ROOT / "docs" / "wire-format.md"
JAVA_SOURCE = ROOT / "tests" / "interop" / "java" / "OipRoundTrip.java"
DOC_BOOTSTRAP = "127.0.0.1:9092"
MODEL = "langid:2"


@pytest.fixture(scope="module")
def kafka(request: pytest.FixtureRequest) -> Iterator[str]:
    """Apache Kafka: the session's broker when it is Kafka, else one node for this module."""
    if broker_engine() == "kafka":
        yield request.getfixturevalue("broker")
        return
    with KafkaCluster(lib=KAFKA_LIB) as node:
        yield node.bootstrap


@pytest.fixture(scope="module")
def langid(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``langid:2`` serving on ``kafka`` with the default prefix, as the doc has it."""
    repo = tmp_path_factory.mktemp("langid-models")
    build_langid(BuildContext(root=repo, cache=MODEL_CACHE))
    state = tmp_path_factory.mktemp("langid-state")
    stage = StageProcess(MODEL, repo, "--bootstrap", kafka, "--no-grpc", "--state-dir", str(state))
    try:
        stage.wait_ready(60)
        yield kafka
    finally:
        stage.terminate()


def doc_kcat_commands() -> tuple[str, str]:
    """The doc's kcat example: the producing pipeline and the consuming command."""
    blocks = re.findall(r"```sh\n(.*?)```", WIRE_FORMAT.read_text(), flags=re.DOTALL)
    (block,) = [b for b in blocks if "kcat -P" in b and "kcat -C" in b]  # not the signing one
    lines = block.strip().splitlines()
    split = next(i for i, line in enumerate(lines) if line.startswith("kcat -C"))
    return "\n".join(lines[:split]), "\n".join(lines[split:])


def _has_records(bootstrap: str, topic: str) -> bool:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=5)
    found = metadata.topics.get(topic)
    return found is not None and found.error is None and bool(found.partitions)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)


def _reply(text: str) -> dict[str, Any]:
    (line,) = [line for line in text.splitlines() if line.startswith("{")]
    reply: dict[str, Any] = json.loads(line)
    return reply


def test_the_docs_kcat_example_works_verbatim(langid: str) -> None:
    if shutil.which("kcat") is None:
        pytest.skip("kcat is not installed: `make setup` installs Debian's kcat")
    produce, consume = (c.replace(DOC_BOOTSTRAP, langid) for c in doc_kcat_commands())
    assert "yard.m.langid.2" in produce  # the doc names a model that exists
    sent = _run("bash", "-c", produce)
    assert sent.returncode == 0, sent.stderr
    deadline = time.monotonic() + 60  # the reply topic exists once the stage has answered
    while not _has_records(langid, "my-replies"):
        assert time.monotonic() < deadline, "the stage never answered"
    got = _run("bash", "-c", consume)
    assert got.returncode == 0, got.stderr
    reply = _reply(got.stdout)
    assert reply["id"] == "k1"
    assert reply["model_name"] == "langid"
    assert reply["outputs"][0]["data"] == ["fr"]
    documented = json.loads(WIRE_FORMAT.read_text().split("```json\n", 1)[1].split("```", 1)[0])
    probability = pytest.approx(documented["outputs"][1]["data"][0], abs=1e-4)  # float32 maths
    documented["outputs"][1]["data"] = [probability]
    assert reply == documented  # the doc shows what kcat prints


def test_the_java_client_round_trips_an_oip_json_request(langid: str, tmp_path: Path) -> None:
    classpath = f"{KAFKA_LIB.resolve()}/*"
    compiled = _run("javac", "-d", str(tmp_path), "-cp", classpath, str(JAVA_SOURCE))
    assert compiled.returncode == 0, compiled.stderr
    text = "das ist ein kleiner Test auf Deutsch"
    run = _run("java", "-cp", f"{tmp_path}:{classpath}", "OipRoundTrip", langid,
               "yard.m.langid.2", "java-replies", "j1", text)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    reply = _reply(run.stdout)
    assert reply["id"] == "j1"
    assert reply["model_version"] == "2"
    assert reply["outputs"][0]["data"] == ["de"]
