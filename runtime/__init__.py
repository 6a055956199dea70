"""Process set-up shared by the API, the dataflows and ops: settings, logging, Redis."""
