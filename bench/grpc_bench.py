"""OIP v2 ModelInfer load at fixed concurrency against any server of the protocol.

A *target* starts one server for a measurement and returns its process and ``host:port``;
readiness is ModelReady answering true, checked before anything is timed. The client is one
grpc.aio channel with ``concurrency`` coroutines each issuing calls back to back for a fixed
duration; every target gets the same request (``x``: 24 float32 in ``raw_input_contents``).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.grpc_peers import MLSERVER_VENV, write_mlserver_model
from bench.procs import ServiceProcess, python_module

__all__ = [
    "GrpcResult",
    "GrpcTarget",
    "bare_target",
    "measure_address",
    "measure_grpc",
    "mlserver_target",
    "modelyard_grpc_target",
]

GrpcTarget = Callable[[Path], tuple[ServiceProcess, str]]
MODEL, VERSION = "noop", "1"
PAYLOAD = np.zeros(24, dtype=np.float32)


def bare_target(workdir: Path) -> tuple[ServiceProcess, str]:
    """The bare grpc.aio servicer (``bench.grpc_peers``)."""
    proc = ServiceProcess(
        "bare-grpc", python_module("bench.grpc_peers", "bare"), workdir / "bare-grpc.log"
    )
    return proc, _address(proc, r"^grpc=(\S+)")


def modelyard_grpc_target(repository: Path) -> GrpcTarget:
    """``modelyard serve noop:1 --no-kafka``: the stage's gRPC server alone."""

    def start(workdir: Path) -> tuple[ServiceProcess, str]:
        cmd = python_module(
            "modelyard.cli.main", "serve", f"{MODEL}:{VERSION}", "--repository",
            str(repository), "--no-kafka", "--grpc-port", "0", "--metrics-port", "0",
        )  # fmt: skip
        proc = ServiceProcess("modelyard-grpc", cmd, workdir / "modelyard-grpc.log")
        return proc, _address(proc, r"^modelyard stage ready .*grpc=(\S+)")

    return start


def mlserver_target(workdir: Path) -> tuple[ServiceProcess, str]:
    """MLServer 1.7.1 from its isolated venv, serving the no-op runtime."""
    binary = MLSERVER_VENV / "bin" / "mlserver"
    if not binary.exists():
        raise RuntimeError(f"{binary} missing: run `bash bench/setup_peers.sh`")
    grpc_port, http_port, metrics_port = _free_ports(3)
    folder = write_mlserver_model(workdir / "mlserver", grpc_port, http_port, metrics_port)
    env = {"PYTHONPATH": str(folder)}  # its runtime module; not our workspace
    proc = ServiceProcess(
        "mlserver", [str(binary), "start", str(folder)], workdir / "mlserver.log", folder, env
    )
    return proc, f"127.0.0.1:{grpc_port}"


def _address(proc: ServiceProcess, pattern: str) -> str:
    try:
        return proc.wait_for_line(pattern, timeout_s=120).group(1)
    except BaseException:
        proc.stop()
        raise


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _oip() -> tuple[Any, Any]:
    # Imported on use: the Kafka half of the benchmark runs without the generated modules.
    from modelyard.api.oip.v2 import grpc_service_pb2, grpc_service_pb2_grpc  # noqa: PLC0415

    return grpc_service_pb2, grpc_service_pb2_grpc


@dataclass(frozen=True)
class GrpcResult:
    concurrency: int
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.calls / self.seconds


def measure_grpc(
    target: GrpcTarget, workdir: Path, concurrencies: tuple[int, ...] = (1, 16),
    duration_s: float = 5.0,
) -> list[GrpcResult]:  # fmt: skip
    """Start the target once, wait for ModelReady, then measure each concurrency in turn."""
    proc, address = target(workdir)
    try:
        return measure_address(proc, address, concurrencies, duration_s)
    finally:
        proc.stop()


def measure_address(
    proc: ServiceProcess, address: str, concurrencies: tuple[int, ...], duration_s: float
) -> list[GrpcResult]:
    """``measure_grpc`` on a server already started (left running)."""
    return asyncio.run(_measure_all(proc, address, concurrencies, duration_s))


async def _measure_all(
    proc: ServiceProcess, address: str, concurrencies: tuple[int, ...], duration_s: float
) -> list[GrpcResult]:
    _, pb_grpc = _oip()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await _wait_model_ready(stub, proc)
        request = _infer_request()
        await _run_clients(stub, request, 8, 1.0)  # warm-up: connections, caches, JIT-less paths
        return [await _run_clients(stub, request, c, duration_s) for c in concurrencies]


async def _wait_model_ready(stub: Any, proc: ServiceProcess, timeout_s: float = 120) -> None:
    pb, _ = _oip()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            reply = await stub.ModelReady(
                pb.ModelReadyRequest(name=MODEL, version=VERSION), timeout=1
            )
            if reply.ready:
                return
        except grpc.aio.AioRpcError:
            pass  # not listening or model still loading
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{proc.name}: model not ready:\n{proc.tail()}")


def _infer_request() -> Any:
    pb, _ = _oip()
    x = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[PAYLOAD.size])
    return pb.ModelInferRequest(
        model_name=MODEL, model_version=VERSION, inputs=[x],
        raw_input_contents=[PAYLOAD.astype("<f4").tobytes()],
    )  # fmt: skip


async def _run_clients(stub: Any, request: Any, concurrency: int, duration_s: float) -> GrpcResult:
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + duration_s

    async def client() -> None:
        while (t0 := time.perf_counter()) < deadline:
            await stub.ModelInfer(request, timeout=10)
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    return GrpcResult(concurrency, len(latencies), elapsed, float(p50), float(p99))
