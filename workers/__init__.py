"""The standalone Floodgate process: command line, signals, logging set-up."""
