"""bench_heatmaps cohorts with their own width (`isotropic@2048`): parsed, drawn at that width, kept apart."""

import argparse
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_heatmaps


@pytest.mark.parametrize(
    "spec",
    [
        "real@2048",
        "isotropic@",
        "isotropic@0",
        "isotropic@wide",
        "noise@64",
        "lowrank:0",
        "real:30,x",
        "real:",
    ],
)
def test_a_width_only_follows_a_synthetic_generator(spec: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        bench_heatmaps.cohort_spec(spec)


def test_a_cohort_is_drawn_at_its_own_width_and_the_others_at_in_dim() -> None:
    args = argparse.Namespace(min_tiles=20, max_tiles=30, noise=0.3, shift=24.0, iso_shift=4.0, rank=4)
    for spec, width in (("isotropic@48", 48), ("isotropic", 16), ("lowrank@24", 24)):
        base, in_dim = bench_heatmaps.split_cohort(bench_heatmaps.cohort_spec(spec), 16)
        gen = torch.Generator().manual_seed(0)
        space = bench_heatmaps.Space.draw(in_dim, args.rank, gen)
        bags = bench_heatmaps.make_bags(base, bench_heatmaps.Draw(2, 0.3, in_dim, args, gen, space, None))
        assert {bag.x.shape[1] for bag in bags} == {width}
        assert bags[1].planted.any() and not bags[0].planted.any()


def test_a_cohort_may_name_its_own_densities_and_is_reported_without_them() -> None:
    spec = bench_heatmaps.cohort_spec("isotropic@2048:30,10")
    assert bench_heatmaps.cohort_densities(spec, [30.0, 10.0, 3.0, 1.0]) == [30.0, 10.0]
    assert bench_heatmaps.cohort_densities("real", [3.0]) == [3.0]
    assert bench_heatmaps.split_cohort(spec, 16) == ("isotropic", 2048)
    assert bench_heatmaps.cohort_name(spec) == "isotropic@2048"


def test_merging_runs_of_different_cohorts_keeps_every_cohort_in_the_tables() -> None:
    default = {"settings": {"seeds": 5, "generators": ["isotropic", "real"]}, "runs": [{"seed": 0}]}
    wide = {"settings": {"seeds": 5, "generators": ["isotropic@2048"]}, "runs": [{"seed": 0}]}
    merged = bench_heatmaps.merge_reports([default, wide])
    assert merged["settings"]["generators"] == ["isotropic", "real", "isotropic@2048"]
    assert merged["settings"]["seeds"] == 1


def _run(generator: str, seed: int, auroc: float, a: float, b: float) -> dict:
    return {
        "model": "m", "generator": generator, "density": 30.0, "seed": seed, "auroc": auroc,
        "methods": {"attention": {"topk": a}, "relevance": {"topk": b}},
    }  # fmt: skip


def test_the_default_method_is_judged_on_the_runs_that_classify_only() -> None:
    """Two seeds of three classify and `attention` finds the tiles there; the third seed (AUROC 0.5, where
    `relevance` happens to score 1.0) and a cohort where one seed of three classifies (by chance, say) must not
    decide the pick."""
    report = {
        "settings": {"models": ["m"], "generators": ["lowrank", "isotropic"], "densities": [30.0]},
        "runs": [
            _run("lowrank", 0, 1.0, 0.9, 0.5),
            _run("lowrank", 1, 0.95, 0.8, 0.4),
            _run("lowrank", 2, 0.5, 0.0, 1.0),
            _run("isotropic", 0, 1.0, 0.0, 1.0),
            *(_run("isotropic", seed, 0.5, 0.0, 1.0) for seed in (1, 2)),
        ],
    }
    pick = bench_heatmaps.pick_default_methods(report)["m"]
    assert pick["method"] == "attention"
    assert pick["solved"] == ["lowrank 30% (2/3)"]
    assert pick["worst_gain"]["attention"] == pytest.approx((0.85 - 0.3) / 0.7)


def test_a_report_names_the_real_features_it_drew_from_and_a_merge_of_two_extractions_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    features = {"demo-cmu-a.h5": torch.ones(3, 4), "demo-tcga-a.h5": torch.zeros(2, 4)}
    for name in features:
        (tmp_path / name).touch()
    monkeypatch.setattr(bench_heatmaps, "load_features", lambda path: features[path.name])
    first = bench_heatmaps.features_digest(tmp_path)
    assert first["tiles"] == {"demo-cmu": 3, "demo-tcga": 2}
    features["demo-tcga-a.h5"] = torch.full((2, 4), 1e-3)  # the same tiles, another extraction
    second = bench_heatmaps.features_digest(tmp_path)
    assert second["tiles"] == first["tiles"] and second["sha256"] != first["sha256"]

    def report(drawn_from: dict) -> dict:
        return {"settings": {"generators": ["real"]}, "runs": [], "real_features": drawn_from}

    assert bench_heatmaps.merge_reports([report(first), report(first)])["real_features"] == first
    mixed = bench_heatmaps.merge_reports([report(first), report(second)])
    assert "different feature extractions" in bench_heatmaps.real_features_note(mixed)
    assert first["sha256"][:16] in bench_heatmaps.real_features_note(report(first))
