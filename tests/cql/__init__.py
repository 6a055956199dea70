"""The data layer against the live schema."""
