"""``modelyard up`` as a library: the embedded broker, topics, control state, workers, routers.

:class:`Stack` is a context manager (``with Stack(pipelines=[...], repository=...) as stack``);
the CLI command in :mod:`modelyard.cli.up` only adds signals and printing.
"""

from modelyard.stack.settings import StackSettings
from modelyard.stack.stack import ROUTER_READY, STAGE_READY, Stack, StackError

__all__ = ["ROUTER_READY", "STAGE_READY", "Stack", "StackError", "StackSettings"]
