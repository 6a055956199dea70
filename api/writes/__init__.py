"""Accepting utterances: validation beyond shapes, and the exactly-once store."""
