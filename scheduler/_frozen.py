"""Cheaper construction of the frozen dataclasses made once per job.

A ``@dataclass(frozen=True, slots=True)`` sets each field in ``__init__``
through ``object.__setattr__`` (its own ``__setattr__`` refuses writes): for
the 23 fields of a ``JobRecord`` that is about 7 µs per record on a slow core,
paid for every submitted and every claimed job. :func:`quick_init` gives such
a class an ``__init__`` with the same signature that, for the moment of
construction, lends the instance a plain twin class with the same slots, sets
the fields with ordinary assignments and gives the instance its class back
(about 1.5 µs). Nothing else changes: the instance is of the frozen class,
refuses writes, compares, hashes, copies and ``dataclasses.replace``-s as before,
and ``__post_init__`` still runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["quick_init"]

C = TypeVar("C", bound=type)


def quick_init(cls: C) -> C:
    """Give the frozen slots dataclass ``cls`` a faster ``__init__``; see the module
    docstring. Fields with ``default_factory`` or ``init=False`` are refused
    (``TypeError``): the classes it is used on have neither."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"quick_init needs a frozen slots dataclass, not {cls.__name__}")
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    defaults: dict[str, Any] = {}
    positional: list[str] = []
    keyword: list[str] = []
    for f in fields:
        if not f.init or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"quick_init: {cls.__name__}.{f.name} has init=False or a factory")
        text = f.name
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
            text = f"{f.name}=_default_{f.name}"
        (keyword if f.kw_only else positional).append(text)
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    slots: tuple[str, ...] = tuple(cls.__dict__["__slots__"])
    twin = type(f"_{cls.__name__}Init", (), {"__slots__": slots})
    body = ["    _set(self, '__class__', _twin)"]
    body += [f"    self.{name} = {name}" for name in names]
    body.append("    _set(self, '__class__', _cls)")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = f"def __init__({signature}):\n" + "\n".join(body) + "\n"
    scope: dict[str, Any] = {f"_default_{k}": v for k, v in defaults.items()}
    scope.update(_set=object.__setattr__, _twin=twin, _cls=cls)
    exec(source, scope)
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    generated = cls.__dict__["__init__"]
    init.__doc__ = generated.__doc__
    init.__annotations__ = dict(generated.__annotations__)  # for help() and the docs
    init.__module__ = cls.__module__
    type.__setattr__(cls, "__init__", init)
    return cls
