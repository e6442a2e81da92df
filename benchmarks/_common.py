"""Helpers that several bench_*.py share (no imports of the package: usable before sys.path is set)."""

from collections.abc import Iterable, Sequence
from typing import Any


def default_pick_lines(picks: dict[str, Any], figures: str, label: str, none_line: str) -> list[str]:
    """One bullet per model: the default score method a benchmark picked and the worst-case figures behind
    it (`picks[model][figures]`: method -> figure), or `none_line` for a model the benchmark could not judge."""
    lines = []
    for model, pick in picks.items():
        if pick["method"] is None:
            lines.append(f"- `{model}`: {none_line}")
            continue
        detail = ", ".join(f"{m} {v:.2f}" for m, v in pick[figures].items())
        lines.append(
            f"- `{model}`: **{pick['method']}** ({label} {detail}; over {', '.join(pick['solved'])})"
        )
    return lines


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> list[str]:
    """The lines of a Markdown table. `align` holds one letter per column, `l` or `r`; by default the first
    column is left-aligned (names) and the others right-aligned (figures)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align)
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines
