"""The one progress bar of every stage: what it is doing, a bar, done / total, a rate, elapsed time.

Every stage draws the same columns, so the output of `wsi tile`, `extract`, `train`, `eval` and `predict`
reads alike; a stage adds its own columns (the current slide, a rate) in the middle. No console means no
bar: library callers and tests pass `console=None`.
"""

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

SLIDE = "{task.fields[slide]}"  # a middle column naming the slide at hand (add_task(..., slide=""))


class RateColumn(ProgressColumn):
    """Units per second since the task started, for tasks added with a `unit` field ("tiles").

    Averaged over the whole task rather than rich's short window: workers report in bursts, which would
    make a windowed rate jump between zero and several times the truth.
    """

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit")
        elapsed = task.finished_time or task.elapsed
        if not unit or not elapsed or not task.completed:
            return Text("")
        rate = task.completed / elapsed
        return Text(f"{rate:,.{0 if rate >= 10 else 1}f} {unit}/s", style="progress.data.speed")


def progress_bar(
    console: Console | None,
    *middle: ProgressColumn | str,
    label: str = "{task.description}",
    transient: bool = True,
    eta: bool = False,
) -> Progress:
    """A rich `Progress`: `label`, bar, n/total, the `middle` columns (strings are text templates), elapsed
    time, and with `eta` the time remaining. `transient` bars vanish when done (a summary follows)."""
    columns: list[ProgressColumn] = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(c) if isinstance(c, str) else c for c in middle]
    columns.append(TimeElapsedColumn())
    if eta:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console, transient=transient, disable=console is None)
