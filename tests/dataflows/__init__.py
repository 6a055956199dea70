"""The dataflows against an independent recount."""
