"""The outage drill: replay a compressed incident through Floodgate and a naive client.

Run it: ``python examples/outage_drill.py`` (about 80 s; ``--quick`` about 20 s).
Same as ``floodgate drill`` and ``python -m workers.drill``; ``--help`` lists
the options (``--out DIR``, ``--backlog PATH``, ``--strict``).

What happens: a simulated LLM API is served by uvicorn on 127.0.0.1 with a hard
concurrency cap and a rate limit (429 + Retry-After). The script plays normal
load, an outage (503), a degraded phase (slow, some 500/503) and recovery,
with steady interactive calls and an early burst of batch jobs, first through
Floodgate, then through a semaphore with blind retries. The report says PASS
or FAIL for each target (no batch job lost; interactive p99 within its
deadline while the upstream is up; 10x fewer requests during the outage; a
fast, clean drain after recovery) and points to a PNG timeline.
"""

from __future__ import annotations

import sys

from workers.drill import run_drill

if __name__ == "__main__":
    raise SystemExit(run_drill(sys.argv[1:]))
