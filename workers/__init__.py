"""The standalone Floodgate process: the ``floodgate`` command line, signals,
logging set-up and the admin server (the library in ``scheduler`` does none of these).

- ``cli.py``: argparse entry point; ``commands/``: one module per sub-command
- ``run.py``: the worker's life (drain, graceful stop, second signal)
- ``signals.py``, ``logging_setup.py``, ``admin_server.py``: process concerns
- ``app_loader.py`` (``--app module:attr``), ``backlog_access.py``, ``progress.py``

It needs uvicorn, which the library does not: ``pip install 'floodgate[worker]'``.
"""

from importlib.util import find_spec

if find_spec("uvicorn") is None:
    raise ModuleNotFoundError(
        "the floodgate worker and command line need uvicorn, which is not installed: "
        "pip install 'floodgate[worker]'",
        name="uvicorn",
    )
