"""``python -m benchmarks.durable``: this benchmark alone."""

from __future__ import annotations

from .._common import main
from . import NAME, __doc__, run

raise SystemExit(main(NAME, __doc__, run))
