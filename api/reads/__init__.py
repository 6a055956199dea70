"""Reading the served tables: periods, ranges, answer cache."""
