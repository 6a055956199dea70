"""Bytewax connectors: the change-feed source and the sinks."""
