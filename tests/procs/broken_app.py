"""An app module that fails at import, for the ``--app`` error message test."""

raise RuntimeError("this app module is broken on purpose")
