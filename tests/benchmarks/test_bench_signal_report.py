"""bench_signal --report-only: a JSON written before a score method existed still gives its table and defaults."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_signal


def _old_report() -> dict:
    """Two conditions, one model, top-k for three methods only (as `signal_default_cpu.json` holds)."""
    runs = [
        {"condition": c, "model": "abmil", "seed": 0, "auroc": 0.95, "topk": topk}
        for c, topk in (
            ("30%", {"attention": 0.60, "relevance": 0.70, "layer_relevance": 0.65}),
            ("3%", {"attention": 0.20, "relevance": 0.50, "layer_relevance": 0.40}),
        )
    ]
    settings = {
        "models": ["abmil"], "seeds": 1, "train_bags": 8, "test_bags": 4, "min_tiles": 10, "max_tiles": 20,
        "in_dim": 16, "shift": 6.0, "epochs": 1, "lr": 1e-3,
    }  # fmt: skip
    return {
        "settings": settings, "conditions": ["30%", "3%"], "chance": {"30%": 0.3, "3%": 0.03}, "runs": runs,
        "wall_s": 60.0,
    }  # fmt: skip


def test_an_old_report_is_judged_on_the_methods_it_measured() -> None:
    report = _old_report()
    assert bench_signal.methods_in(report) == ["attention", "relevance", "layer_relevance"]
    picks = bench_signal.pick_default_methods(report)
    # Worst case over the two solved conditions: attention 0.20, relevance 0.50, layer_relevance 0.40.
    assert picks["abmil"]["method"] == "relevance"
    report["default_methods"] = picks
    table = bench_signal.markdown(report)
    assert "attention / relevance / layer_relevance**" in table
    assert "| 3% (0.03) | 0.20 / 0.50 / 0.40 |" in table
