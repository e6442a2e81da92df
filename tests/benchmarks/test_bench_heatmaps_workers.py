"""bench_heatmaps --workers: every seed runs exactly once, and the expensive occlusion seeds are spread out."""

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_heatmaps


@pytest.mark.parametrize(("seeds", "workers"), [(5, 2), (5, 3), (2, 4), (7, 1)])
def test_each_seed_goes_to_one_worker_and_reference_seeds_to_different_ones(seeds: int, workers: int) -> None:
    args = argparse.Namespace(first_seed=0, seeds=seeds, workers=workers, occlusion_seeds=2)
    shares = bench_heatmaps.deal_seeds(args)
    assert len(shares) == workers
    assert sorted(seed for share in shares for seed in share) == list(range(seeds))
    if workers > 1:  # seeds 0 and 1 run the quadratic reference: never both on one worker
        assert not any({0, 1} <= set(share) for share in shares)


def test_merged_report_counts_the_seeds_it_holds() -> None:
    parts = [
        {"settings": {"seeds": 5}, "runs": [{"seed": 0}, {"seed": 0}]},
        {"settings": {"seeds": 5}, "runs": [{"seed": 3}]},
    ]
    merged = bench_heatmaps.merge_reports(parts)
    assert merged["settings"]["seeds"] == 2 and len(merged["runs"]) == 3


@pytest.mark.parametrize("text", ["0", "-1", "two"])
def test_workers_must_be_a_positive_count(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        bench_heatmaps.at_least_one(text)
