"""The HTTP resources: one thin controller per resource."""
