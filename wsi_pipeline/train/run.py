"""`wsi train` as a library call: labels + bags -> splits -> one model per fold -> run folder.

Order matters for "nothing is lost": inputs are checked and every bag read before the first file is written,
the resolved config and splits are written before training (so `--resume` and `wsi eval` find them), and a
fold counts as finished only once its `result.json` exists.
"""

import contextlib
import json
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from wsi_pipeline.config import read_yaml_mapping, write_resolved_config
from wsi_pipeline.devices import resolve_device, torch_threads
from wsi_pipeline.errors import ConfigError, WsiError
from wsi_pipeline.stores.atomic import claimed_folder, clean_stale_temporaries, write_text_atomic
from wsi_pipeline.stores.baseline import BASELINE_FILE, mean_pool, save_baseline
from wsi_pipeline.stores.labels import check_trainable, patient_grouping_problem, read_label_table
from wsi_pipeline.stores.run_folder import (
    CONFIG_FILE,
    EXTRACTOR_FILE,
    SPLITS_FILE,
    SplitRow,
    fold_dir,
    read_splits,
    write_extractor_identity,
    write_splits,
)
from wsi_pipeline.train.bags import BagCache, Cohort, match_bags
from wsi_pipeline.train.baseline import fit_baseline
from wsi_pipeline.train.config import TrainConfig
from wsi_pipeline.train.fold import FoldSetup, fold_members, train_fold
from wsi_pipeline.train.loop import LAST_FILE, FoldData, FoldResult, read_fold_result
from wsi_pipeline.train.process import (
    ProcessRole,
    launched_by_torchrun,
    torchrun_process,
)
from wsi_pipeline.train.splits import make_splits

SUMMARY_FILE = "summary.json"
# Settings that change how a run executes but not what it computes; a resumed run may change them.
RUNTIME_KEYS = {"cache", "device", "threads", "require_patient_id"}
# Below these, the validation set cannot tell epochs apart: AUROC ties at 1.0 and one slide moves the loss.
MIN_VAL_SLIDES, MIN_VAL_PER_CLASS = 20, 5

FoldHook = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True)
class RunSummary:
    run_dir: Path
    folds: list[FoldResult]
    reports: bool = True  # False on torchrun ranks other than 0: rank 0 alone prints the final line

    @property
    def mean_val_auroc(self) -> float:
        return statistics.fmean(f.best_val_auroc for f in self.folds)

    @property
    def sd_val_auroc(self) -> float:
        return statistics.stdev(f.best_val_auroc for f in self.folds) if len(self.folds) > 1 else 0.0

    def final_line(self) -> str:
        if len(self.folds) == 1:
            f = self.folds[0]
            return f"best val AUROC {f.best_val_auroc:.4f} (epoch {f.best_epoch}); run folder {self.run_dir}"
        return (
            f"best val AUROC {self.mean_val_auroc:.4f} ± {self.sd_val_auroc:.4f} over {len(self.folds)} folds; "
            f"run folder {self.run_dir}"
        )


def _resumed_config(cfg: TrainConfig, run_dir: Path) -> TrainConfig:
    """The saved config, with this call's runtime settings. Any other difference is refused: a resumed run
    must compute what the uninterrupted run would have."""
    saved = TrainConfig.model_validate(read_yaml_mapping(run_dir / CONFIG_FILE))

    def same(key: str) -> bool:
        mine, theirs = getattr(cfg, key), getattr(saved, key)
        if key in ("features", "labels") and mine is not None:
            return Path(mine).resolve() == Path(theirs).resolve()
        if key == "classes" and mine is None:
            return True
        return mine == theirs

    differ = [
        f"{key} ({getattr(cfg, key)!r}, the run has {getattr(saved, key)!r})"
        for key in TrainConfig.model_fields
        if key not in RUNTIME_KEYS and not same(key)
    ]
    if differ:
        raise ConfigError(
            f"{run_dir}: --resume with settings that differ from {CONFIG_FILE}: {'; '.join(differ)}"
        )
    return saved.model_copy(update={key: getattr(cfg, key) for key in RUNTIME_KEYS})


def run_training(
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool = False,
    console: Console | None = None,
    role: ProcessRole | None = None,
    on_epoch_end: FoldHook | None = None,
) -> RunSummary:
    """Train every fold of a run. Started by torchrun (and given no `role`), this process joins the others:
    DistributedDataParallel across all of them, rank 0 writing."""
    device = resolve_device(cfg.device)  # a runtime setting: the same before and after `_resumed_config`
    with torch_threads(cfg.threads):
        if role is not None or not launched_by_torchrun():
            return _run_training(cfg, run_dir, resume, console, role or ProcessRole(), device, on_epoch_end)
        with torchrun_process(device) as (role, device):
            return _run_training(cfg, run_dir, resume, console, role, device, on_epoch_end)


def _run_training(
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool,
    console: Console | None,
    role: ProcessRole,
    device: torch.device,
    on_epoch_end: FoldHook | None,
) -> RunSummary:
    say = console.print if console is not None and role.writes else (lambda *_: None)
    cfg, resume = _run_to_start(cfg, run_dir, resume, role, say)
    features, labels = Path(cfg.features).resolve(), Path(cfg.labels).resolve()
    cohort = _cohort(cfg, features, labels, say)
    if resume:
        splits = read_splits(run_dir / SPLITS_FILE)
    else:
        splits = make_splits(cohort.table, cfg.folds, cfg.split_fractions, cfg.seed)

    needed = sorted({r.slide_id for r in splits if r.split in ("train", "val")})
    cache = BagCache({s: cohort.paths[s] for s in needed}, cfg.cache, device)
    cache.load(console if role.writes else None)
    resolved = cfg.model_copy(
        update={"features": features, "labels": labels, "classes": list(cohort.table.class_names)}
    )
    with claimed_folder(run_dir) if role.writes else contextlib.nullcontext():
        if role.writes and not resume:
            write_splits(run_dir / SPLITS_FILE, splits)
            write_resolved_config(run_dir / CONFIG_FILE, resolved)
        if role.writes and not (run_dir / EXTRACTOR_FILE).is_file():  # what `wsi predict` checks bags against
            write_extractor_identity(run_dir, list(cohort.paths.values()))
        say(
            f"model {cfg.model} on {device}; {cohort.in_dim}-d bags, cache {cfg.cache}"
            + (f" ({cache.nbytes / 2**30:.2f} GiB)" if cfg.cache != "none" else "")
        )
        patient_of = {row.slide_id: row.patient_id for row in cohort.table.rows}
        setup = FoldSetup(
            cfg, cohort.table.class_names, cohort.in_dim, cache, patient_of, device, role, console
        )
        fold_run = _FoldRun(setup, run_dir, cohort, splits)
        results = [fold_run(fold, on_epoch_end) for fold in range(cfg.folds)]
        summary = RunSummary(run_dir=run_dir, folds=results, reports=role.writes)
        if role.writes:
            body = {
                "folds": [asdict(r) for r in results],
                "best_val_auroc_mean": summary.mean_val_auroc,
                "best_val_auroc_sd": summary.sd_val_auroc,
            }
            write_text_atomic(run_dir / SUMMARY_FILE, json.dumps(body, indent=2) + "\n")
        return summary


def _run_to_start(
    cfg: TrainConfig, run_dir: Path, resume: bool, role: ProcessRole, say: Callable[..., None]
) -> tuple[TrainConfig, bool]:
    """The config to run and whether it resumes: a fresh run refuses a folder that holds one, and
    `--resume` on a folder killed before its config was written starts it."""
    has_run = (run_dir / CONFIG_FILE).is_file()
    role.barrier()  # every rank has looked before rank 0 writes the config
    if resume and not has_run:
        # Killed before its config was written, a run has nothing to resume: it starts, so the same
        # `--resume` command is right to re-run after a kill at any moment (a requeued job, a retry loop).
        say(f"{run_dir}: no run to resume yet (no {CONFIG_FILE}); starting it")
        resume = False
    if not resume and has_run:
        raise WsiError(
            f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out"
        )
    if resume:
        cfg = _resumed_config(cfg, run_dir)
    if cfg.features is None or cfg.labels is None:
        raise ConfigError("both --features and --labels are needed (or features:/labels: in the config file)")
    return cfg, resume


def _cohort(cfg: TrainConfig, features: Path, labels: Path, say: Callable[..., None]) -> Cohort:
    """The labelled slides with bags, checked trainable; patient grouping that may leak is said or refused."""
    table = read_label_table(labels, cfg.classes)
    if problem := patient_grouping_problem(table):  # a silent leak risk: said on every run, or refused
        if cfg.require_patient_id:
            raise WsiError(f"{problem} (--require-patient-id)")
        say(f"warning: {problem}; --require-patient-id makes this an error")
    cohort = match_bags(features, table, cfg.allow_missing)
    check_trainable(cohort.table)
    per_class = Counter(row.label for row in cohort.table.rows)
    say(
        f"{len(cohort.paths)} labelled slides with bags ("
        + ", ".join(f"{name} {per_class[name]}" for name in cohort.table.class_names)
        + f"); {cohort.n_unlabelled} unlabelled bags ignored"
        + (f"; {cohort.n_missing} labelled slides without a bag left out" if cohort.n_missing else "")
    )
    return cohort


@dataclass(frozen=True)
class _FoldRun:
    """Trains one fold of a run, or reports it finished earlier (a fold is done once result.json exists)."""

    setup: FoldSetup
    run_dir: Path
    cohort: Cohort
    splits: list[SplitRow]

    def __call__(self, fold: int, on_epoch_end: FoldHook | None) -> FoldResult:
        setup, cfg = self.setup, self.setup.cfg
        out = fold_dir(self.run_dir, fold, cfg.folds)
        done = read_fold_result(out)
        if done is not None:
            if setup.role.writes:  # a kill between writing result.json and removing the resume state
                (out / LAST_FILE).unlink(missing_ok=True)
            setup.say(f"fold {fold}: finished earlier (best val AUROC {done.best_val_auroc:.4f}), skipped")
            return done
        if setup.role.writes:
            clean_stale_temporaries(out)
        targets = {row.slide_id: self.cohort.table.class_index(row.label) for row in self.cohort.table.rows}
        data = _fold_data(self.splits, fold, out, targets)
        _prepare_fold(data, setup)
        hook = (lambda epoch, row: on_epoch_end(fold, epoch, row)) if on_epoch_end else None
        return train_fold(setup, data, hook)


def _fold_data(splits: list[SplitRow], fold: int, out: Path, targets: dict[str, int]) -> FoldData:
    rows = [r for r in splits if r.fold == fold]
    return FoldData(
        fold=fold,
        out_dir=out,
        train_ids=sorted(r.slide_id for r in rows if r.split == "train"),
        val_ids=sorted(r.slide_id for r in rows if r.split == "val"),
        targets=targets,
    )


def small_validation_warning(data: FoldData, class_names: tuple[str, ...], select_on: str) -> str | None:
    """A one-line warning when the validation set is too small to choose an epoch or fit a temperature
    (`select_on: last` chooses no epoch)."""
    counts = Counter(data.targets[s] for s in data.val_ids)
    low = [f"{name} {counts[i]}" for i, name in enumerate(class_names) if counts[i] < MIN_VAL_PER_CLASS]
    if len(data.val_ids) >= MIN_VAL_SLIDES and not low:
        return None
    return (
        f"validation set of {len(data.val_ids)} slides"
        + (f" ({', '.join(low)})" if low else "")
        + f" is below {MIN_VAL_SLIDES} slides / {MIN_VAL_PER_CLASS} per class: "
        + ("the temperature is" if select_on == "last" else "the chosen epoch and the temperature are")
        + " noisy; give more slides a val split (split column or --folds)"
    )


def _prepare_fold(data: FoldData, setup: FoldSetup) -> None:
    """Warn about a small validation set (with members: one member's part); fit the mean-pooled baseline on
    the slides the fold's model(s) train on (seconds), which `wsi eval` reports next to the model."""
    members = fold_members(setup, data)
    trained_on = sorted(data.train_ids + data.val_ids) if members else data.train_ids
    warning = small_validation_warning(
        members[0] if members else data, setup.class_names, setup.cfg.select_on
    )
    if warning is not None:
        setup.say(f"[yellow]warning[/]: fold {data.fold}: {warning}")
    path = data.out_dir / BASELINE_FILE
    if setup.role.writes and not path.is_file():
        data.out_dir.mkdir(parents=True, exist_ok=True)
        pooled = np.stack([mean_pool(setup.cache.get(s).cpu().numpy()) for s in trained_on])
        targets = np.array([data.targets[s] for s in trained_on])
        save_baseline(path, fit_baseline(pooled, targets, setup.class_names))
