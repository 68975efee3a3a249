"""``python -m workers`` runs the ``floodgate`` command line."""

from workers.cli import main

raise SystemExit(main())
