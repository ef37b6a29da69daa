"""How the ops commands print: one JSON shape for ``--json``, cells safe for a terminal, aligned
columns. Shared by every ``ticketmesh`` subcommand that prints tables."""
from __future__ import annotations

import json
from typing import Any, Collection


def print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


def cell(value: Any, limit: int) -> str:
    """``value`` as one terminal-safe cell: control characters blanked (names, reasons and relay
    answers come from people and other systems), cut to ``limit`` with an ellipsis."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def grid(rows: list[list[str]], header: list[str], right: Collection[int] = ()) -> list[str]:
    """Header and rows as aligned lines; the columns numbered in ``right`` are right-aligned."""
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
            for cells in [header, *rows]]
