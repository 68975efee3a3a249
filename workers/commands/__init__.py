"""The ``floodgate`` sub-commands, one module each.

Each module has ``register(subparsers)``, which adds its parser and sets
``handler`` (``args -> exit code``) as a default. :data:`COMMANDS` is the
order ``floodgate --help`` lists them in.

``floodgate drill`` (the outage drill) forwards its arguments to
``workers.drill.run_drill``.
"""

from __future__ import annotations

from types import ModuleType

from . import drain, drill, gate, jobs, status, submit, worker

__all__ = ["COMMANDS", "drain", "drill", "gate", "jobs", "status", "submit", "worker"]

COMMANDS: tuple[ModuleType, ...] = (worker, status, jobs, submit, gate, drain, drill)
