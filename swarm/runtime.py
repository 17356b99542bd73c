"""Deprecated name of `swarm.effects` (the effect-handler stack); kept so old imports keep working."""

from swarm.effects import *  # noqa: F401,F403
from swarm.effects import UNSET, Handler, Message, active_handlers, apply_stack, apply_stack_async  # noqa: F401
from swarm.effects import new_run_scope, run_scope  # noqa: F401
