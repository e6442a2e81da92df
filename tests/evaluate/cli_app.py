"""`wsi eval` as a stand-alone Typer app, so these tests do not depend on the other stages' commands."""

import typer

from cli.eval import eval_

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(eval_)
