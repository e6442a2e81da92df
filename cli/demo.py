"""`wsi demo --out DIR`: the whole pipeline on a demo cohort cut from two real slides, in one command."""

from pathlib import Path

import typer

from cli.common import DebugOption, console, user_errors


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Folder for everything the demo writes."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Redo every step instead of resuming from the outputs in --out."
    ),
    debug: bool = DebugOption,
) -> None:
    """Run the whole pipeline on a demo cohort cut from two real slides, and print where to look.

    Cuts small pyramidal TIFFs from two real slides (one class per source slide), then runs tile ->
    extract (random-init ResNet-50) -> train (vit_sf) -> eval, and prints the test AUROC as a mechanics check (no CI: it is not a result)
    and the paths of the heatmaps and QC images. This shows the mechanics of the pipeline, not a
    diagnosis: the features come from random weights and each class is crops of one slide. Re-running
    resumes; stdout holds only the final report.
    """
    with user_errors(debug):
        from wsi_pipeline.demo.run import run_demo  # heavy: torch and every stage

        result = run_demo(out, overwrite=overwrite, debug=debug, console=console)
        for line in result.report_lines():
            typer.echo(line)
