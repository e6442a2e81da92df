"""`wsi train` as a stand-alone Typer app, so these tests do not depend on the other stages' commands."""

import typer

from cli.train import train

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(train)
