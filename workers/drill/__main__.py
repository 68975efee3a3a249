"""``python -m workers.drill``: run the outage drill."""

from workers.drill import run_drill

raise SystemExit(run_drill())
