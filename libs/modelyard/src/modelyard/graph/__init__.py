"""Pipelines as data: specs, the stage graph, conditions, the model contract and the flow.

No I/O here (apart from reading a spec file): the router service walks requests through the
graph with :meth:`PipelineSpec.ready_stages` and evaluates ``when`` conditions with
:meth:`Condition.evaluate`.
"""

from modelyard.graph.contract import ContractError, check_contract, require_contract
from modelyard.graph.expressions import (
    Condition,
    EvaluationError,
    ExpressionError,
    compile_condition,
)
from modelyard.graph.graph import REQUEST, Frontier
from modelyard.graph.load import load_spec, parse_spec
from modelyard.graph.spec import PipelineSpec, Ref, Source, SpecError, Stage, TensorField
from modelyard.graph.values import normalize

__all__ = [
    "REQUEST",
    "Condition",
    "ContractError",
    "EvaluationError",
    "ExpressionError",
    "Frontier",
    "PipelineSpec",
    "Ref",
    "Source",
    "SpecError",
    "Stage",
    "TensorField",
    "check_contract",
    "compile_condition",
    "load_spec",
    "normalize",
    "parse_spec",
    "require_contract",
]
