"""`wsi models`: the aggregators `wsi train --model` takes, with their settings and defaults."""

import typer
from rich.console import Console
from rich.table import Table

from cli.common import DebugOption, user_errors


def models(debug: bool = DebugOption) -> None:
    """List the aggregators (`wsi train --model NAME`) and their settings with defaults."""
    with user_errors(debug):
        from wsi_pipeline.models import MODELS  # heavy: the models import torch

        table = Table(title="aggregators (wsi train --model NAME; settings via model_overrides)")
        table.add_column("name")
        table.add_column("what")
        table.add_column("settings (defaults)")
        for entry in MODELS:
            settings = ", ".join(
                f"{key}={field.default!r}" for key, field in entry.config.model_fields.items()
            )
            table.add_row(entry.name, entry.description, settings)
        Console(width=max(Console().width, 160)).print(table)
        raise typer.Exit(0)
