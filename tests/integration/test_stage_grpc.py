"""`modelyard serve` answering a stock OIP v2 client, with and without Kafka."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
from modelyard.broker import create_topics
from modelyard.repository.build import BuildContext
from modelyard.wire import Envelope, decode_envelope, encode_envelope

from tests.support.kafka_io import Collector, produce_all
from tests.support.models import write_shout_version
from tests.support.onnx_models import write_affine_version
from tests.support.stage import running_stage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_shout_version(BuildContext(root=root, cache=root / ".cache"))
    write_affine_version(root)
    return root


def affine_call(client: triton.InferenceServerClient, x: np.ndarray) -> np.ndarray:
    (spec,) = client.get_model_metadata("affine").inputs
    tensor = triton.InferInput(spec.name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("affine", [tensor])
    out = result.as_numpy(client.get_model_metadata("affine").outputs[0].name)
    assert out is not None
    return out


def test_grpc_only_mode_serves_without_a_broker(repo: Path) -> None:
    with running_stage("affine:1", repo, "--no-kafka", "--bootstrap", "127.0.0.1:1") as (_, ready):
        assert ready["topic"] == "off"
        client = triton.InferenceServerClient(ready["grpc"])
        assert client.is_server_live()
        assert client.is_model_ready("affine")
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        np.testing.assert_allclose(affine_call(client, x), 2 * x + 1)
        bad = triton.InferInput("x", [1, 3], "INT32")
        bad.set_data_from_numpy(np.ones((1, 3), np.int32))
        with pytest.raises(triton.InferenceServerException, match="expected FP32"):
            client.infer("affine", [bad])
        client.close()


def test_kafka_and_grpc_share_one_model(broker: str, unique: str, repo: Path) -> None:
    create_topics(broker, [f"{unique}.in", f"{unique}.out"])
    produce_all(
        broker,
        f"{unique}.in",
        [
            (
                "k1",
                encode_envelope(Envelope("k1", {"text": ["via kafka"]})),
                [("reply-to", f"{unique}.out".encode())],
            )
        ],
    )
    replies = Collector(broker, f"{unique}.out")
    args = ["--bootstrap", broker, "--input-topic", f"{unique}.in", "--group", f"{unique}.g"]
    with running_stage("shout:1", repo, *args) as (_, ready):
        client = triton.InferenceServerClient(ready["grpc"])
        text = triton.InferInput("text", [1], "BYTES")
        text.set_data_from_numpy(np.array([b"via grpc"], dtype=object))
        result = client.infer("shout", [text])
        (msg,) = replies.until(lambda m: len(m) >= 1)
        client.close()
    replies.close()
    assert result.as_numpy("shout").tolist() == [b"VIA GRPC"]
    assert decode_envelope(msg.value()).fields["shout"].tolist() == [b"VIA KAFKA"]


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _signed(dir_: Path, name: str, ca: Path, ca_key: Path, san: str | None = None) -> None:
    key, csr, pem = dir_ / f"{name}.key", dir_ / f"{name}.csr", dir_ / f"{name}.pem"
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", f"/CN={name}")  # fmt: skip
    extra: list[str | Path] = []
    if san is not None:
        ext = dir_ / f"{name}.ext"
        ext.write_text(f"subjectAltName={san}\n")
        extra = ["-extfile", ext]
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", pem, "-days", "1", *extra)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", d / "ca.key", "-out", d / "ca.pem", "-days", "1",
             "-subj", "/CN=modelyard-test-ca")  # fmt: skip
    _signed(d, "server", d / "ca.pem", d / "ca.key", san="IP:127.0.0.1,DNS:localhost")
    _signed(d, "client", d / "ca.pem", d / "ca.key")
    return d


def _tls_client(url: str, pki: Path, *, client_cert: bool) -> triton.InferenceServerClient:
    mine = {"private_key": str(pki / "client.key"), "certificate_chain": str(pki / "client.pem")}
    return triton.InferenceServerClient(
        url, ssl=True, root_certificates=str(pki / "ca.pem"), **(mine if client_cert else {})
    )


def test_grpc_over_tls_serves_a_stock_client_and_refuses_plain_text(repo: Path, pki: Path) -> None:
    tls = ("--grpc-tls-cert", str(pki / "server.pem"), "--grpc-tls-key", str(pki / "server.key"))
    with running_stage("affine:1", repo, "--no-kafka", *tls) as (_, ready):
        client = _tls_client(ready["grpc"], pki, client_cert=False)
        x = np.ones((1, 3), dtype=np.float32)
        np.testing.assert_allclose(affine_call(client, x), 2 * x + 1)
        client.close()
        plain = triton.InferenceServerClient(ready["grpc"])
        with pytest.raises(triton.InferenceServerException):
            plain.is_server_live()
        plain.close()


def test_mutual_tls_requires_a_client_certificate(repo: Path, pki: Path) -> None:
    tls = ("--grpc-tls-cert", str(pki / "server.pem"), "--grpc-tls-key", str(pki / "server.key"),
           "--grpc-tls-client-ca", str(pki / "ca.pem"))  # fmt: skip
    with running_stage("affine:1", repo, "--no-kafka", *tls) as (_, ready):
        anonymous = _tls_client(ready["grpc"], pki, client_cert=False)
        with pytest.raises(triton.InferenceServerException):
            anonymous.is_server_live()
        anonymous.close()
        known = _tls_client(ready["grpc"], pki, client_cert=True)
        assert known.is_server_live()
        assert known.is_model_ready("affine")
        known.close()
