"""The outage drill: a compressed real incident replayed against a local upstream.

``floodgate drill`` / ``python -m workers.drill [--quick] [--out DIR]`` plays
the same script (normal load, an outage, a degraded phase, recovery; steady
interactive traffic and an early burst of batch jobs) through Floodgate and
through a naive client (a semaphore and blind retries), against a simulated
LLM API served by uvicorn on 127.0.0.1, and reports PASS/FAIL against the
targets in :mod:`workers.drill.targets`, with a PNG timeline.

Modules: ``config`` (profiles), ``upstream`` + ``server`` (the simulated API),
``scenario`` (phases, load, sampling), ``records`` (what a run recorded),
``floodgate_client``, ``naive`` and ``wire`` (the two clients), ``targets``
(the math), ``report``, ``facts`` and ``plot`` (the output), ``run`` (the
command line).
"""

from .run import drill, run_drill

__all__ = ["drill", "run_drill"]
