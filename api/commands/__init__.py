"""Operator commands of the API package: keys, bulk load, OpenAPI export."""
