"""`wsi demo` end to end on a reduced cohort: the report's AUROC is the run's, every path it prints exists,
a second run resumes instead of redoing, and the command refuses a folder that is not a demo folder."""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from wsi_pipeline.demo.config import DemoConfig
from wsi_pipeline.demo.run import run_demo
from wsi_pipeline.stores.feature_bag import read_bag_attrs

AUROC_LINE = re.compile(r"^demo mechanics check: test AUROC (\d\.\d{3}) on (\d+) test crops .*NOT a result")


@pytest.mark.slow
def test_demo_reports_auroc_and_existing_paths_then_resumes(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    config = DemoConfig(n_per_class=6, tiles_per_side=2, epochs=2)
    lines = run_demo(out, config).report_lines()

    match = AUROC_LINE.match(lines[0])
    assert match, lines[0]
    metrics = json.loads((out / "runs" / "demo" / "eval" / "metrics.json").read_text())
    assert float(match.group(1)) == pytest.approx(metrics["auroc"], abs=5e-4)
    # The crops of a class share one patient in truth: no interval is printed (issue 12, item 11).
    assert "CI" not in lines[0].replace("no confidence interval", "") and "no confidence interval" in lines[0]
    assert int(match.group(2)) == metrics["n_slides"]
    assert len(metrics["n_per_class"]) == 2 and min(metrics["n_per_class"].values()) >= 1
    assert "not a diagnosis" in lines[1] and "RANDOM-INIT" in lines[1]

    printed = [Path(token) for line in lines for token in line.split() if token.startswith(str(out))]
    assert all(path.exists() for path in printed), [p for p in printed if not p.exists()]
    heatmaps = [p for p in printed if p.parent.name == "heatmaps" and p.name.endswith(".png")]
    qc_images = [p for p in printed if p.name.endswith(".qc.png")]
    assert len(qc_images) == metrics["n_slides"]
    assert {p.name.split(".")[0] for p in heatmaps} == {p.name.split(".")[0] for p in qc_images}
    bags = sorted((out / "features").glob("*.h5"))
    assert len(bags) == 12 and read_bag_attrs(bags[0])["weights_sha256"].startswith("random-init:")

    checkpoint = out / "runs" / "demo" / "checkpoint.pt"
    written = {p: p.stat().st_mtime_ns for p in [*bags, checkpoint, *(out / "slides").iterdir()]}
    again = run_demo(out, config).report_lines()
    assert again[0] == lines[0]
    assert {p: p.stat().st_mtime_ns for p in written} == written


def test_command_refuses_a_folder_that_is_not_a_demo_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--overwrite"])
    assert result.exit_code == 1
    assert "not a demo folder" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
