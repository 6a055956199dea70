"""Process set-up: the shared rate limiter."""
