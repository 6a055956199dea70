"""The whole system under faults, fuzzing, bulk loads and many tenants."""
