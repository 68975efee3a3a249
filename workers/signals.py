"""SIGTERM and SIGINT for a graceful stop: the first asks to stop, the second to hurry.

Only the worker process installs these (the library never touches signals).
Handlers run on the event loop (``loop.add_signal_handler``), so the callbacks
may touch asyncio objects; leaving the ``with`` block restores the defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

__all__ = ["SIGNALS", "shutdown_signals"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def shutdown_signals(
    on_first: Callable[[str], None], on_again: Callable[[str, int], None]
) -> Iterator[None]:
    """Call ``on_first(name)`` on the first SIGTERM/SIGINT and ``on_again(name, n)``
    on the n-th (n >= 2). Needs a running loop in the main thread."""
    loop = asyncio.get_running_loop()
    received = 0

    def handle(sig: signal.Signals) -> None:
        nonlocal received
        received += 1
        if received == 1:
            on_first(sig.name)
        else:
            on_again(sig.name, received)

    installed: list[signal.Signals] = []
    try:
        for sig in SIGNALS:
            loop.add_signal_handler(sig, handle, sig)
            installed.append(sig)
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
