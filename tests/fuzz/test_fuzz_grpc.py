"""gRPC: a stage's OIP v2 ``ModelInfer`` and the router's ``Infer``/``InferStream``."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from modelyard.api.oip.v2 import grpc_service_pb2 as oip
from modelyard.api.pipeline.v1 import pipeline_pb2 as ppb

from tests.fuzz.profiles import fuzz_settings
from tests.fuzz.strategies import GRPC_METADATA, RESULT_FIELDS, grpc_requests, infer_requests
from tests.fuzz.targets import check_gateway_infer, check_grpc_infer


@fuzz_settings(1500)
@given(grpc_requests(), GRPC_METADATA)
def test_any_model_infer_request_is_served_or_refused(
    request: oip.ModelInferRequest, metadata: list[Any]
) -> None:
    check_grpc_infer(request, metadata)


@fuzz_settings(1000)
@given(infer_requests(), GRPC_METADATA, RESULT_FIELDS)
def test_any_pipeline_infer_request_is_served_or_refused(
    request: ppb.InferRequest, metadata: list[Any], result_fields: dict[str, Any]
) -> None:
    check_gateway_infer(request, metadata, result_fields)
