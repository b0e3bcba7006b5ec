"""Quoting for the few places where SQL text cannot take bound parameters (table functions
and view bodies)."""
from __future__ import annotations


def literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def string_list(values: list[str]) -> str:
    """A DuckDB list literal of strings."""
    return "[" + ", ".join(literal(v) for v in values) + "]"
