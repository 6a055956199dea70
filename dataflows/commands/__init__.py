"""The operator commands: run, replay, redrive, status."""
