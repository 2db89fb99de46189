"""The router's front door: submit requests to pipelines over Kafka, from asyncio or gRPC.

``PipelineGateway`` (transport-neutral core over the Kafka client contract of
docs/router-api.md) and ``BlockingGateway`` (for CLIs); ``start_pipeline_grpc`` serves the
``modelyard.pipeline.v1.PipelineService`` gRPC API in front of a gateway.
"""

from modelyard.gateway.blocking import BlockingGateway, Submission
from modelyard.gateway.carrier import request_carrier, trace_id_of
from modelyard.gateway.core import DEFAULT_TIMEOUT_S, PipelineGateway
from modelyard.gateway.pending import RESULT, STAGE, Event
from modelyard.gateway.principal import PrincipalResolver, TokenPrincipals
from modelyard.gateway.server import start_pipeline_grpc
from modelyard.gateway.servicer import PipelineServicer

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "RESULT",
    "STAGE",
    "BlockingGateway",
    "Event",
    "PipelineGateway",
    "PipelineServicer",
    "PrincipalResolver",
    "Submission",
    "TokenPrincipals",
    "request_carrier",
    "start_pipeline_grpc",
    "trace_id_of",
]
