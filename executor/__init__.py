"""The long-running executor: feed → bar builder → engine → order manager → broker (runs in venv-live)."""
