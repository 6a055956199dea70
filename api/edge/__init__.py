"""The request edge: authentication, rate limits, idempotency, problem documents, metrics."""
