"""bench_real --merge: runs over different repeats become one report whose means are over all their folds."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_real


def _run(path: Path, accuracies: list[float], first_repeat: int | None) -> Path:
    folds = [{"auroc": 0.9, "accuracy": a, "ece": 0.1} for a in accuracies]
    args = {"repeats": "1", "folds": str(len(folds)), "set": "[]"}
    if first_repeat is not None:
        args["first_repeat"] = str(first_repeat)
    body = {"args": args, "results": {"musk2": {"abmil": {"summary": {}, "folds": folds}}}}
    path.write_text(json.dumps(body))
    return path


def test_merged_means_are_over_every_fold_of_every_run(tmp_path: Path) -> None:
    a = _run(tmp_path / "a.json", [0.8, 0.9], None)  # a run from before --first-repeat: repeat 0
    b = _run(tmp_path / "b.json", [0.5, 0.6, 0.7], 1)
    merged = bench_real.merge_results([json.loads(p.read_text()) for p in (a, b)])["musk2"]["abmil"]
    assert [f["accuracy"] for f in merged["folds"]] == [0.8, 0.9, 0.5, 0.6, 0.7]
    assert merged["summary"]["accuracy"]["mean"] == pytest.approx(0.7)
    assert merged["summary"]["folds"]["n"] == 5
    saved = json.loads(b.read_text())["args"]
    assert bench_real.run_protocol(saved).startswith("1 x 3-fold, repeats 1-1")
    assert "repeats 0-0" in bench_real.run_protocol(json.loads(a.read_text())["args"])
