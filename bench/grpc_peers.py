"""gRPC peers for the ModelInfer benchmark.

* ``bare``: a grpc.aio OIP v2 servicer that returns its input as output ``y``: the floor of
  any Python gRPC server. Run: ``python -m bench.grpc_peers bare --port 0`` (prints
  ``grpc=HOST:PORT`` once serving).
* MLServer 1.7.1 serving an equivalent no-op custom runtime. MLServer cannot share our lockfile
  (its pins conflict with ours), so it runs from the isolated venv ``.bench/mlserver-venv`` that
  ``bench/setup_peers.sh`` creates; :func:`write_mlserver_model` writes its model folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path
from typing import Any

__all__ = ["MLSERVER_VENV", "serve_bare", "write_mlserver_model"]

MLSERVER_VENV = Path(__file__).resolve().parents[1] / ".bench" / "mlserver-venv"

_MLSERVER_RUNTIME = '''"""No-op MLServer runtime for modelyard's benchmark: output y = input x."""

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class NoOp(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = payload.inputs[0]
        y = ResponseOutput(name="y", datatype=x.datatype, shape=x.shape, data=x.data)
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=[y])
'''


def write_mlserver_model(root: Path, grpc_port: int, http_port: int, metrics_port: int) -> Path:
    """Write an MLServer folder (settings, one ``noop`` model, its runtime) and return it.

    ``parallel_workers=0`` runs inference in the server process: for a no-op that is MLServer's
    fastest setting (its default worker pool adds a process hop per request).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "noop_runtime.py").write_text(_MLSERVER_RUNTIME)
    settings = {
        "grpc_port": grpc_port, "http_port": http_port, "metrics_port": metrics_port,
        "host": "127.0.0.1", "parallel_workers": 0, "debug": False,
        "load_models_at_startup": True,
    }  # fmt: skip
    model = {
        "name": "noop", "implementation": "noop_runtime.NoOp",
        "parameters": {"version": "1"},
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
    }  # fmt: skip
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    (root / "model-settings.json").write_text(json.dumps(model, indent=2))
    return root


async def serve_bare(host: str, port: int) -> None:
    """Serve the bare servicer until SIGTERM/SIGINT."""
    import grpc  # noqa: PLC0415
    from modelyard.api.oip.v2 import grpc_service_pb2_grpc as pb_grpc  # noqa: PLC0415

    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(_bare_servicer(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"grpc={host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1)


def _bare_servicer() -> Any:
    from modelyard.api.oip.v2 import grpc_service_pb2 as pb  # noqa: PLC0415
    from modelyard.api.oip.v2 import grpc_service_pb2_grpc as pb_grpc  # noqa: PLC0415

    class Bare(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        async def ServerLive(self, request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=True)

        async def ModelReady(self, request: Any, context: Any) -> Any:
            return pb.ModelReadyResponse(ready=True)

        async def ModelInfer(self, request: Any, context: Any) -> Any:
            x = request.inputs[0]
            y = pb.ModelInferResponse.InferOutputTensor(
                name="y", datatype=x.datatype, shape=x.shape, contents=x.contents
            )
            return pb.ModelInferResponse(
                model_name=request.model_name, model_version="1", id=request.id, outputs=[y],
                raw_output_contents=request.raw_input_contents[:1],
            )  # fmt: skip

    return Bare()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("peer", choices=["bare"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve_bare(args.host, args.port))


if __name__ == "__main__":
    main()
