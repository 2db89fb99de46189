"""The OIP v2 gRPC transport of a stage: tensor codec, servicer and server lifecycle."""

from modelyard.grpc.server import start_grpc_server, stop_grpc_server
from modelyard.grpc.servicer import CALLER_METADATA_KEY, InferenceCore, OipServicer
from modelyard.grpc.tensors import decode_inputs, encode_outputs

__all__ = [
    "CALLER_METADATA_KEY",
    "InferenceCore",
    "OipServicer",
    "decode_inputs",
    "encode_outputs",
    "start_grpc_server",
    "stop_grpc_server",
]
