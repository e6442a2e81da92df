"""Per-slide outcomes of a batch stage and the summary every batch ends with.

A batch never stops at a bad slide: each slide ends as one `SlideOutcome`, the summary table lists them
all, and the stage's exit code is non-zero when any failed.
"""

from dataclasses import dataclass, field
from typing import Literal

from rich.console import Console
from rich.table import Table

Status = Literal["done", "skipped", "failed"]


@dataclass
class SlideOutcome:
    slide_id: str
    status: Status
    reason: str = ""
    seconds: float = 0.0
    fields: dict[str, object] = field(default_factory=dict)


def exit_code(outcomes: list[SlideOutcome]) -> int:
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def summary_table(title: str, outcomes: list[SlideOutcome], columns: list[str]) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("slide")
    table.add_column("status")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("note")
    for o in outcomes:
        style = {"done": "green", "skipped": "dim", "failed": "bold red"}[o.status]
        cells = [_format(o.fields.get(c, "")) for c in columns]
        table.add_row(o.slide_id, f"[{style}]{o.status}[/]", *cells, f"{o.seconds:.1f}", o.reason)
    return table


def print_summary(console: Console, title: str, outcomes: list[SlideOutcome], columns: list[str]) -> None:
    # A log file or pipe has no width, and rich would squeeze the table into 80 columns, cutting every
    # cell to "…"; there, the table gets the room it needs.
    table_console = (
        console if console.is_terminal else Console(file=console.file, width=max(console.width, 200))
    )
    table_console.print(summary_table(title, outcomes, columns))
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    console.print(f"{title}: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
