"""What the sinks write: facts, recounts and served rows, per flow."""
