"""`benchmarks/gpu_check.sh --smoke` runs the GPU check's code paths on the CPU at toy sizes.

The suite runs a subset to stay within its budget: the `steps` step (all five aggregators, one training
step each, `vit_sf` through the chunked + checkpointed path) and `predict_200k` (a one-epoch run, then
`wsi predict` with a heatmap of a bag the size set for smoke runs). The extraction and epoch steps run in
the full smoke (`bash benchmarks/gpu_check.sh --smoke`, a few minutes), not here.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_steps_and_prediction_run_and_are_recorded() -> None:
    command = [sys.executable, "benchmarks/gpu_check.py", "--smoke", "--only", "steps", "predict_200k"]
    done = subprocess.run(
        [*command, "--limit-scale", "6"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    report = json.loads((ROOT / "benchmarks/out/gpu_check_smoke/gpu_check_cpu.json").read_text())
    assert done.returncode == 0, (done.stderr[-2000:], report["steps"])
    assert set(report["steps"]) == {"steps", "predict_200k"}
    steps = json.loads((ROOT / "benchmarks/out/gpu_check_smoke/attention_smoke_cpu.json").read_text())
    rows = {r["model"]: r for r in steps["rows"]}
    assert set(rows) == {"vit_sf", "vit_sf_ca", "abmil", "transmil", "vit"}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["vit_sf"]["chunk_tokens"] == 256 and rows["vit_sf_ca"]["chunk_tokens"] is None
    assert steps["load"]["busy"] in (True, False)  # the load rule ran and was recorded
    predicted = report["steps"]["predict_200k"]["figures"]
    assert predicted["tiles"] == 3000 and any(name.endswith(".png") for name in predicted["heatmaps"])
