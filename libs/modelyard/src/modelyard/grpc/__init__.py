"""gRPC transport primitives: OIP v2 tensor codec, server lifecycle and TLS. A stage's OIP
servicer is :mod:`modelyard.stage.grpc_adapter`."""

from modelyard.grpc.server import stop_grpc_server
from modelyard.grpc.tensors import decode_inputs, encode_outputs

__all__ = ["decode_inputs", "encode_outputs", "stop_grpc_server"]
