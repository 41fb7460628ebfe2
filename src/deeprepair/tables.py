"""Markdown tables, the one way the tool writes them (reports of evaluate, mine, repair, the demo
and bench)."""

from __future__ import annotations

__all__ = ["markdown_table"]


def markdown_table(head: list[str], rows: list[list], numbers: bool = True) -> str:
    """A Markdown table of ``head`` and ``rows`` (cells written with ``str``), no trailing newline.
    ``numbers``: every column but the first is right-aligned (``---:``), as columns of figures read
    best; otherwise every column keeps the default alignment."""
    sep = ["---"] + ["---:" if numbers else "---"] * (len(head) - 1)
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "|".join(sep) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])
