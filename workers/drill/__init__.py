"""The outage drill: a real incident, compressed or not, replayed against a local upstream.

``floodgate drill`` / ``python -m workers.drill [--profile P] [--out DIR]
[--repeat N]`` plays the same script (normal load, an outage, a degraded
phase, recovery; steady interactive traffic and an early burst of batch
jobs) through Floodgate, once per variant (``tuned``, ``defaults``, ``rpm``)
the profile lists, and through a naive client (a semaphore and blind
retries), against a simulated LLM API served by uvicorn on 127.0.0.1, and
reports PASS/FAIL against the targets in :mod:`workers.drill.targets`, with a
PNG timeline.

Modules: ``config`` (profiles), ``upstream`` + ``server`` (the simulated API),
``scenario`` (phases, load, sampling), ``records`` (what a run recorded),
``floodgate_client``, ``naive`` and ``wire`` (the clients), ``targets``
(the math), ``report``, ``facts``, ``plot`` and ``summary`` (the output),
``run`` (the command line).
"""

from .run import drill, run_drill

__all__ = ["drill", "run_drill"]
