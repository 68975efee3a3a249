"""Find the user's Scheduler from ``--app module:attribute``.

The current directory goes first on ``sys.path`` (as ``python -m`` does), so
``floodgate worker --app myapp.tasks:sched`` run from the project imports the
same module, and registers the same task names, as the web app does.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from types import ModuleType

from scheduler import Scheduler

from .errors import EXIT_USAGE, CommandError

__all__ = ["load_scheduler", "set_backlog"]


def load_scheduler(spec: str) -> Scheduler:
    """Import ``module:attribute`` (dots allowed in both) and return that Scheduler.

    Raises:
        CommandError: exit code 2, naming the module or attribute that is wrong.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CommandError(
            f"--app {spec!r}: expected 'module:attribute', e.g. --app myapp.tasks:sched",
            exit_code=EXIT_USAGE,
        )
    module = _import(spec, module_name)
    obj: object = module
    for i, part in enumerate(attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            owner = module_name if i == 0 else f"{module_name}:{'.'.join(attr.split('.')[:i])}"
            raise CommandError(
                f"--app {spec!r}: {owner!r} has no attribute {part!r}{_hint(module)}",
                exit_code=EXIT_USAGE,
            ) from None
    if not isinstance(obj, Scheduler):
        raise CommandError(
            f"--app {spec!r}: {attr!r} is a {type(obj).__name__}, not a scheduler.Scheduler"
            f"{_hint(module)}",
            exit_code=EXIT_USAGE,
        )
    return obj


def set_backlog(sched: Scheduler, backlog: str | None) -> None:
    """Point ``sched`` at another backlog before it is opened (``--backlog PATH``).

    ``Scheduler.backlog`` is a plain attribute read when the scheduler opens.
    """
    if backlog is not None:
        sched.backlog = backlog


def _import(spec: str, module_name: str) -> ModuleType:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise CommandError(
                f"--app {spec!r}: no module named {missing!r} (searched {cwd} and sys.path); "
                "run floodgate from your project directory or fix the module path",
                exit_code=EXIT_USAGE,
            ) from None
        raise _import_failed(spec, module_name, exc) from None
    except Exception as exc:
        raise _import_failed(spec, module_name, exc) from None


def _import_failed(spec: str, module_name: str, exc: Exception) -> CommandError:
    return CommandError(
        f"--app {spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}",
        exit_code=EXIT_USAGE,
        detail="".join(traceback.format_exception(exc)),
    )


def _hint(module: ModuleType) -> str:
    found = sorted(n for n, v in vars(module).items() if isinstance(v, Scheduler))
    return f" (schedulers in that module: {', '.join(found)})" if found else ""
