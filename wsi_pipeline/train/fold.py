"""One fold of a run: one model, or `members` of them (train/members.py), from FoldData to a checkpoint.

`wsi train` (train/run.py) calls `train_fold` for each fold of its splits; benchmarks/bench_real.py calls it
on its own splits, so a benchmark measures exactly what a run trains.
"""

from dataclasses import dataclass

import torch
from rich.console import Console

from wsi_pipeline.train.bags import BagCache
from wsi_pipeline.train.config import TrainConfig
from wsi_pipeline.train.loop import (
    EpochHook,
    FoldData,
    FoldResult,
    FoldTrainer,
    read_fold_result,
    write_fold_result,
)
from wsi_pipeline.train.members import (
    MEMBERS_FILE,
    finish_members,
    member_folds,
    member_seed,
    write_member_table,
)
from wsi_pipeline.train.process import ProcessRole


@dataclass(frozen=True)
class FoldSetup:
    """What every fold of a run shares."""

    cfg: TrainConfig
    class_names: tuple[str, ...]
    in_dim: int
    cache: BagCache
    patient_of: dict[str, str]  # slide_id -> patient_id: members' parts never split a patient
    device: torch.device
    role: ProcessRole
    console: Console | None

    def say(self, text: str) -> None:
        if self.console is not None and self.role.writes:
            self.console.print(text)


def fold_members(setup: FoldSetup, data: FoldData) -> list[FoldData]:
    """The fold's members (train/members.py); none when it trains one model."""
    if setup.cfg.members == 1:
        return []
    return member_folds(data, setup.patient_of, setup.cfg.members, setup.cfg.seed + data.fold)


def train_fold(setup: FoldSetup, data: FoldData, hook: EpochHook | None = None) -> FoldResult:
    """Train the fold's model(s) on `data`, writing checkpoint.pt and result.json in `data.out_dir` (rank 0)
    and resuming from what an interrupted run left there."""
    members = fold_members(setup, data)
    if 1 < setup.cfg.members > len(members):
        setup.say(
            f"[yellow]warning[/]: fold {data.fold}: {len(members) or 'no'} members instead of {setup.cfg.members}: "
            "a class has fewer patients than that among the fold's training slides"
            + ("" if members else "; one model on the fold's own train/val split")
        )
    if not members:
        return _train_one(setup, setup.cfg, data, hook)
    if setup.role.writes:
        data.out_dir.mkdir(parents=True, exist_ok=True)
        write_member_table(data.out_dir / MEMBERS_FILE, members, setup.patient_of)
    results = []
    for m, member in enumerate(members):
        done = read_fold_result(member.out_dir)
        if done is None:
            setup.say(f"fold {data.fold}: member {m + 1} of {len(members)}")
            cfg = setup.cfg.model_copy(update={"seed": member_seed(setup.cfg.seed, m)})
            done = _train_one(setup, cfg, member, hook)
        results.append(done)
    setup.role.barrier()  # every member's checkpoint is on disk before rank 0 reads them
    if not setup.role.writes:
        return results[0]  # what a rank other than 0 returns is never reported
    amp = setup.cfg.amp and setup.device.type == "cuda"
    result = finish_members(data, members, results, setup.cache, setup.device, amp)
    write_fold_result(data.out_dir, result)
    setup.say(f"fold {data.fold}: {len(members)} members, out-of-part val AUROC {result.best_val_auroc:.4f}")
    return result


def _train_one(setup: FoldSetup, cfg: TrainConfig, data: FoldData, hook: EpochHook | None) -> FoldResult:
    """One model: seeded from (cfg.seed, fold), resumed from `last.pt` when there is one."""
    from wsi_pipeline.models import build_model, model_config  # heavy: torch model modules

    torch.manual_seed(cfg.seed + data.fold)
    model = build_model(
        cfg.model, in_dim=setup.in_dim, n_classes=len(setup.class_names), **cfg.model_overrides
    )
    resolved_model = model_config(cfg.model, **cfg.model_overrides).model_dump(mode="json")
    trainer = FoldTrainer(
        cfg, model.to(setup.device), resolved_model, setup.class_names, setup.in_dim, setup.cache, data,
        setup.device, setup.role, setup.console,
    )  # fmt: skip
    if trainer.restore():
        setup.say(f"fold {data.fold}: resuming after epoch {trainer.state.epoch}")
    return trainer.fit(hook)
