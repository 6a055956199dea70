"""The model client and the analyzers, against a local fake OpenAI server."""
