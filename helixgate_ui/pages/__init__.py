"""Page modules of the web UI (see the contract in helixgate_ui's docstring)."""
