"""Operator commands of the API package: keys and the OpenAPI export."""
