"""The `wsi` command. Stage modules import their heavy libraries inside the command, so `--help` is instant."""

import typer

from wsi_pipeline import __version__

app = typer.Typer(
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
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Whole-slide-image pipeline."""


def _register() -> None:
    from cli import tile

    app.command("tile")(tile.tile)


_register()
