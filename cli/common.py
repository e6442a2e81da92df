"""What every command shares: one-line errors, `--debug`, and the consoles."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from wsi_pipeline.errors import WsiError

# Progress and tables go to stderr so stdout stays clean for paths and figures a script may read.
console = Console(stderr=True)

DebugOption = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors.")


def fail(message: str, code: int = 1) -> typer.Exit:
    # Plain write, not rich: rich wraps long lines, and an error must stay on one line.
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


@contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turn exceptions into one line and an exit code; `--debug` lets them through with tracebacks."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        raise fail("interrupted; complete outputs are kept, re-run the same command to resume", 130) from None
    except WsiError as exc:
        if debug:
            raise
        raise fail(" ".join(str(exc).split())) from None
    except Exception as exc:
        if debug:
            raise
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise fail(f"unexpected {message} (re-run with --debug for the traceback)") from None
