"""`--members K`: K models per fold, each validated on its own part of the fold's training slides, predicting
as one (their mean probability) through eval, predict and the heatmaps."""

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from tests.train.helpers import quick_config, small_cohort
from wsi_pipeline.evaluate import EvalConfig, run_evaluation
from wsi_pipeline.inference.fold_models import FoldModel, checkpoint_model, load_fold_models
from wsi_pipeline.models import build_model
from wsi_pipeline.models.ensemble import MemberEnsemble
from wsi_pipeline.predict.config import PredictConfig
from wsi_pipeline.predict.run import run_prediction
from wsi_pipeline.stores.feature_bag import load_bag
from wsi_pipeline.stores.run_folder import load_checkpoint, read_run_info, read_splits
from wsi_pipeline.train import run_training
from wsi_pipeline.train.loop import FoldData
from wsi_pipeline.train.members import member_folds

MEMBERS = 3


def _fold_data(n_slides: int, patients_of_two: bool) -> tuple[FoldData, dict[str, str]]:
    slides = [f"s{i:02d}" for i in range(n_slides)]
    targets = {s: i % 2 for i, s in enumerate(slides)}
    # Two slides per patient (same class) when asked: a patient must never straddle train and val.
    patient_of = {s: f"p{(i // 4) * 2 + i % 2}" if patients_of_two else f"p{i}" for i, s in enumerate(slides)}
    cut = n_slides * 3 // 4
    return FoldData(0, Path("fold"), slides[:cut], slides[cut:], targets), patient_of


@pytest.mark.parametrize("patients_of_two", [False, True])
def test_members_split_the_folds_training_slides_by_patient_and_class(patients_of_two: bool) -> None:
    data, patient_of = _fold_data(36, patients_of_two)
    members = member_folds(data, patient_of, MEMBERS, seed=5)
    pool = sorted(data.train_ids + data.val_ids)
    assert sorted(s for m in members for s in m.val_ids) == pool  # each pooled slide validates one member
    for m, member in enumerate(members):
        assert member.out_dir == Path("fold") / f"member_{m}"
        assert sorted(member.train_ids + member.val_ids) == pool
        assert not {patient_of[s] for s in member.train_ids} & {patient_of[s] for s in member.val_ids}
        assert {data.targets[s] for s in member.val_ids} == {0, 1}
    assert member_folds(data, patient_of, MEMBERS, seed=5) == members  # seeded


def test_a_class_with_fewer_patients_than_members_gets_fewer_members_or_one_model() -> None:
    """Each member's validation part needs a patient of every class."""
    data, patient_of = _fold_data(8, patients_of_two=False)  # 4 patients per class
    assert len(member_folds(data, patient_of, 5, seed=0)) == 4
    data, patient_of = _fold_data(3, patients_of_two=False)  # one class with a single patient
    assert member_folds(data, patient_of, 5, seed=0) == []


def test_an_ensemble_predicts_the_mean_probability_and_explains_its_own_class() -> None:
    torch.manual_seed(0)
    members = [build_model("abmil", in_dim=16, n_classes=2).eval() for _ in range(MEMBERS)]
    for i, member in enumerate(members):
        member.temperature.fill_(0.5 + i)  # calibrated members: their temperatures are in the mean
    ensemble = MemberEnsemble(members).eval()
    x = torch.randn(1, 40, 16)
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x), dim=-1) for m in members]).mean(dim=0)
        torch.testing.assert_close(torch.softmax(ensemble(x), dim=-1), mean)
    for target in (0, 1):
        expected = torch.stack([m.tile_scores(x, method="relevance", target=target) for m in members]).mean(0)
        torch.testing.assert_close(ensemble.tile_scores(x, method="relevance", target=target), expected)
    predicted = int(mean.argmax())
    torch.testing.assert_close(
        ensemble.tile_scores(x, method="relevance"),
        ensemble.tile_scores(x, method="relevance", target=predicted),
    )


@pytest.fixture(scope="module")
def members_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("members")
    small_cohort(root, 32, slides_per_patient=2)
    cfg = quick_config(root, model="abmil", model_overrides={}, members=MEMBERS, folds=2, epochs=2)
    run_training(cfg, root / "run")
    return root / "run"


def test_each_fold_keeps_its_members_and_one_checkpoint_that_predicts_their_mean(members_run: Path) -> None:
    splits = read_splits(members_run / "splits.csv")
    for fm in load_fold_models_of(members_run):
        fold = members_run / f"fold_{fm.fold}"
        assert isinstance(fm.model, MemberEnsemble) and len(fm.model.members) == MEMBERS
        result = json.loads((fold / "result.json").read_text())
        assert result["members"] == MEMBERS
        with open(fold / "members.csv", newline="") as fh:
            table = list(csv.DictReader(fh))
        trained = {r.slide_id for r in splits if r.fold == fm.fold and r.split in ("train", "val")}
        assert {row["slide_id"] for row in table} == trained  # the fold's train and val slides, pooled
        test_slide = next(r.slide_id for r in splits if r.fold == fm.fold and r.split == "test")
        x = torch.from_numpy(
            np.asarray(load_bag(members_run.parent / "features" / f"{test_slide}.h5").features)
        )
        x = x.float().unsqueeze(0)
        member_probs = []
        for m in range(MEMBERS):
            path = fold / f"member_{m}" / "checkpoint.pt"
            member = checkpoint_model(load_checkpoint(path), path).eval()
            with torch.no_grad():
                member_probs.append(torch.softmax(member(x), dim=-1))
        with torch.no_grad():
            ensemble_prob = torch.softmax(fm.model(x), dim=-1)
        torch.testing.assert_close(ensemble_prob, torch.stack(member_probs).mean(dim=0))


def load_fold_models_of(run: Path) -> list[FoldModel]:
    return load_fold_models(read_run_info(run), torch.device("cpu"))


def test_eval_scores_every_slide_with_its_folds_members(members_run: Path) -> None:
    result = run_evaluation(EvalConfig(heatmaps=False, n_bootstrap=0, device="cpu"), members_run)
    with open(members_run / "eval" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 32 and all(r["source"] == "out-of-fold" for r in rows)
    assert 0.0 <= result.metrics["auroc"] <= 1.0


def test_resume_trains_only_the_member_that_had_not_finished(tmp_path: Path) -> None:
    small_cohort(tmp_path, 16)
    cfg = quick_config(tmp_path, model="abmil", model_overrides={}, members=2, epochs=2)
    run = tmp_path / "run"
    run_training(cfg, run)
    finished = (run / "member_0" / "checkpoint.pt").stat().st_mtime_ns
    whole = load_checkpoint(run / "checkpoint.pt").state_dict
    # As after a kill during member 1: the fold and member 1 have no result yet.
    for path in ("result.json", "checkpoint.pt", "member_1/result.json", "member_1/checkpoint.pt"):
        (run / path).unlink()
    run_training(cfg, run, resume=True)
    assert (run / "member_0" / "checkpoint.pt").stat().st_mtime_ns == finished
    resumed = load_checkpoint(run / "checkpoint.pt")
    assert resumed.members == 2 and resumed.state_dict.keys() == whole.keys()
    for key, value in whole.items():
        torch.testing.assert_close(resumed.state_dict[key], value)


def test_predict_averages_every_member_of_every_fold_and_draws_their_heatmap(
    members_run: Path, tmp_path: Path
) -> None:
    bags = tmp_path / "bags"
    bags.mkdir()
    slide = sorted((members_run.parent / "features").glob("*.h5"))[0]
    shutil.copy(slide, bags / slide.name)
    run_prediction(PredictConfig(features=bags, top_k=0, device="cpu"), members_run, tmp_path / "preds")
    with open(tmp_path / "preds" / "predictions.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    x = torch.from_numpy(np.asarray(load_bag(slide).features)).float().unsqueeze(0)
    every_member = []
    for fold in (0, 1):
        for m in range(MEMBERS):
            path = members_run / f"fold_{fold}" / f"member_{m}" / "checkpoint.pt"
            with torch.no_grad():
                every_member.append(torch.softmax(checkpoint_model(load_checkpoint(path), path)(x), dim=-1))
    classes = read_run_info(members_run).class_names
    expected = torch.stack(every_member).mean(dim=0)[0]
    got = torch.tensor([float(row[f"prob_{c}"]) for c in classes])
    torch.testing.assert_close(got, expected.float(), atol=2e-6, rtol=0)
    assert (tmp_path / "preds" / "heatmaps" / f"{slide.stem}.geojson").is_file()


@pytest.mark.parametrize(("members", "said"), [(1, None), (MEMBERS, None), (5, "4 members instead of 5")])
def test_a_fold_with_too_few_patients_for_its_members_says_how_many_it_trains(
    tmp_path: Path, members: int, said: str | None
) -> None:
    """16 slides, one per patient, 2-fold CV: a fold trains on 8 slides, 4 patients of each class."""
    small_cohort(tmp_path, 16)
    console = Console(file=io.StringIO(), width=200)
    cfg = quick_config(tmp_path, model="abmil", model_overrides={}, members=members, folds=2, epochs=1)
    run_training(cfg, tmp_path / "run", console=console)
    output = console.file.getvalue()
    if said is None:
        assert "instead of" not in output
    else:
        assert said in output
        assert load_checkpoint(tmp_path / "run" / "fold_0" / "checkpoint.pt").members == 4
