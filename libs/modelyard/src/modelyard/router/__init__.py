"""The router's pure core: pipeline specs, the stage graph, conditions and the model contract.

No I/O here (apart from reading a spec file): the router service walks requests through the
graph with :meth:`PipelineSpec.ready_stages` and evaluates ``when`` conditions with
:meth:`Condition.evaluate`.
"""

from modelyard.router.contract import ContractError, check_contract, require_contract
from modelyard.router.expressions import (
    Condition,
    EvaluationError,
    ExpressionError,
    compile_condition,
)
from modelyard.router.graph import REQUEST, Frontier
from modelyard.router.load import load_spec, parse_spec
from modelyard.router.spec import PipelineSpec, Ref, Source, SpecError, Stage, TensorField
from modelyard.router.values import normalize

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
