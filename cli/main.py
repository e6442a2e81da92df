"""The `wsi` command. Stage modules import their heavy libraries inside the command, so `--help` is instant."""

import sys
from collections.abc import Sequence
from typing import Any

import click
import typer
from typer.core import TyperGroup

from cli import demo, extract, models, predict, tile, train
from cli import eval as eval_cmd  # a module here, not the builtin
from wsi_pipeline import __version__


class OneLineErrors(TyperGroup):
    """Usage mistakes (a missing `--out`, an unknown option, a bad value) as one line on stderr, like every
    other error of `wsi`, instead of a usage block and a rich panel; the exit code stays click's (2)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            # Not standalone: click raises usage errors here instead of printing them, and returns the
            # code of a `typer.Exit` instead of exiting.
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            sys.exit(exc.exit_code)  # the help is already printed
        except click.ClickException as exc:
            print(f"error: {usage_error_line(exc)}", file=sys.stderr)
            sys.exit(exc.exit_code)
        except click.Abort:
            print("error: aborted", file=sys.stderr)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def usage_error_line(exc: click.ClickException) -> str:
    message = " ".join(exc.format_message().split())
    ctx: click.Context | None = getattr(exc, "ctx", None)
    if ctx is None:
        return message
    return f"{ctx.command_path}: {message} (see '{ctx.command_path} --help')"


app = typer.Typer(
    cls=OneLineErrors,
    name="wsi",
    help="Whole-slide images to slide-level predictions: tile -> extract -> train -> eval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"wsi {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Whole-slide-image pipeline."""


# In the order `wsi --help` lists them: the pipeline's stages first.
app.command("tile")(tile.tile)
app.command("extract")(extract.extract)
app.command("train")(train.train)
app.command("eval")(eval_cmd.eval_)
app.command("predict")(predict.predict)
app.command("demo")(demo.demo)
app.command("models")(models.models)

if __name__ == "__main__":  # `python -m cli.main`, where the `wsi` script is not installed
    app(prog_name="wsi")
