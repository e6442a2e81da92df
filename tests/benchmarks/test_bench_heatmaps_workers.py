"""bench_heatmaps --workers: every cohort of every seed runs exactly once, and the work is spread evenly."""

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_heatmaps

COHORTS = ["isotropic", "isotropic@2048:30,10", "lowrank", "combination", "real"]


def _args(seeds: int, workers: int, occlusion_seeds: int = 1) -> argparse.Namespace:
    return argparse.Namespace(
        first_seed=0, seeds=seeds, workers=workers, occlusion_seeds=occlusion_seeds, only_units=None,
        generators=COHORTS, densities=[30.0, 10.0, 3.0, 1.0],
    )  # fmt: skip


@pytest.mark.parametrize(("seeds", "workers"), [(5, 2), (5, 3), (2, 4), (7, 1)])
def test_each_cohort_of_each_seed_goes_to_one_worker(seeds: int, workers: int) -> None:
    shares = bench_heatmaps.deal_units(_args(seeds, workers))
    assert len(shares) == workers
    dealt = sorted(unit for share in shares for unit in share)
    assert dealt == [(seed, i) for seed in range(seeds) for i in range(len(COHORTS))]
    for share in shares:  # each worker runs seed-major, so a stopped run still covers every cohort
        assert share == sorted(share)


@pytest.mark.parametrize("workers", [2, 3])
def test_the_reference_seed_is_split_so_no_worker_carries_much_more_than_another(workers: int) -> None:
    """Dealt by whole seeds, one worker got the reference seed (about half the work) and the other the rest."""
    args = _args(5, workers)

    def cost(unit: tuple[int, int]) -> float:
        seed, index = unit
        n = len(bench_heatmaps.cohort_densities(COHORTS[index], args.densities))
        return n * (bench_heatmaps.OCCLUSION_COST if seed < args.occlusion_seeds else 1.0)

    loads = [sum(map(cost, share)) for share in bench_heatmaps.deal_units(args)]
    dearest = 4 * bench_heatmaps.OCCLUSION_COST  # one cohort of the reference seed at four densities
    assert max(loads) - min(loads) <= dearest


def test_a_worker_runs_exactly_the_units_it_was_given() -> None:
    args = _args(5, 1)
    args.only_units = ["3/1", "0/4"]
    assert bench_heatmaps.all_units(args) == [(3, 1), (0, 4)]


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
