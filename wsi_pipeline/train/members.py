"""Several models per fold (`wsi train --members K`): a cross-validation inside the fold's training slides.

Why: on cohorts of a few dozen to a few hundred slides, what one model learns depends on which slides were its
validation set (they choose its epoch and fit its temperature) and on its initialisation, and its bag
accuracy moves by several points from fold to fold for those reasons alone. With K members the fold's train
and val slides are pooled and split by patient into K class-stratified parts; member m trains on the other
parts and is validated, early-stopped and calibrated on part m, with its own seed. Every pooled slide thus
trains K - 1 members and validates one, and the fold predicts with the mean of the members' calibrated
probabilities (`wsi_pipeline.models.ensemble.MemberEnsemble`). It costs K trainings per fold; measured for
`abmil` in benchmarks/RESULTS.md ("Members: an inner cross-validation per fold").

On disk (rank 0): `member_<m>/` per member with what a single model's fold holds (checkpoint.pt,
history.csv, result.json, last.pt while training), `members.csv` (which part each pooled slide validates),
and the fold's own checkpoint.pt (every member's weights, `members: K`) and result.json, written last.
"""

import csv
import io
import statistics
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from wsi_pipeline.metrics import auroc
from wsi_pipeline.stores.atomic import write_text_atomic
from wsi_pipeline.stores.feature_bag import compute_autocast
from wsi_pipeline.stores.run_folder import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from wsi_pipeline.train.bags import BagCache
from wsi_pipeline.train.calibration import nll
from wsi_pipeline.train.loop import FoldData, FoldResult
from wsi_pipeline.train.splits import patient_strata

MEMBERS_FILE = "members.csv"


def member_seed(seed: int, member: int) -> int:
    """Member m's seed (initialisation, bag order, dropout): members differ in more than their data."""
    return seed + 1000 * (member + 1)


def member_folds(data: FoldData, patient_of: dict[str, str], members: int, seed: int) -> list[FoldData]:
    """The members' FoldData: the fold's train and val slides pooled, patients split into `members`
    class-stratified parts (a patient's class as for every split, `splits.patient_strata`), member m validated
    on part m.
    Fewer members when a class has fewer patients than `members` (each part needs one of every class); none
    (a single model on the fold's own split) below two."""
    from sklearn.model_selection import StratifiedKFold  # heavy: scikit-learn

    slides_of: dict[str, list[str]] = defaultdict(list)
    for slide_id in sorted(data.train_ids + data.val_ids):
        slides_of[patient_of[slide_id]].append(slide_id)
    patients, strata = patient_strata((patient_of[s], data.targets[s]) for s in data.train_ids + data.val_ids)
    members = min(members, *Counter(strata).values())
    if members < 2:
        return []
    splitter = StratifiedKFold(n_splits=members, shuffle=True, random_state=seed)
    out = []
    for m, (rest, held) in enumerate(splitter.split(np.zeros(len(patients)), strata)):
        train = sorted(s for i in rest for s in slides_of[patients[i]])
        val = sorted(s for i in held for s in slides_of[patients[i]])
        out.append(replace(data, out_dir=data.out_dir / f"member_{m}", train_ids=train, val_ids=val))
    return out


def write_member_table(path: Path, members: list[FoldData], patient_of: dict[str, str]) -> None:
    """members.csv: slide_id, patient_id, member (the member whose validation part holds the slide)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("slide_id", "patient_id", "member"))
    for slide_id, m in sorted((s, m) for m, member in enumerate(members) for s in member.val_ids):
        writer.writerow((slide_id, patient_of[slide_id], m))
    write_text_atomic(path, buffer.getvalue())


def finish_members(
    data: FoldData,
    members: list[FoldData],
    results: list[FoldResult],
    cache: BagCache,
    device: torch.device,
    amp: bool,
) -> FoldResult:
    """Write the fold's checkpoint (every member's weights, `members: K`) and return its result: the validation
    AUROC and NLL of the members' out-of-part probabilities (each pooled slide scored by the member it
    validated, after its calibration) and the members' median best epoch. Call on the writing rank."""
    from wsi_pipeline.inference.fold_models import checkpoint_model  # heavy: torch model modules

    paths = [member.out_dir / CHECKPOINT_FILE for member in members]
    checkpoints = [load_checkpoint(path) for path in paths]
    first = checkpoints[0]
    probs, targets = [], []
    for member, ckpt, path in zip(members, checkpoints, paths, strict=True):
        model = checkpoint_model(ckpt, path).to(device).eval()
        with torch.no_grad(), compute_autocast(device.type, amp):
            for slide_id in member.val_ids:
                probs.append(torch.softmax(model(cache.get(slide_id).unsqueeze(0)).float(), dim=-1)[0].cpu())
                targets.append(data.targets[slide_id])
    p, y = torch.stack(probs).numpy().astype(np.float64), np.array(targets)
    best_epoch = round(statistics.median(r.best_epoch for r in results))
    val_auroc = auroc(y, p)
    state = {f"members.{m}.{k}": v for m, ckpt in enumerate(checkpoints) for k, v in ckpt.state_dict.items()}
    save_checkpoint(
        data.out_dir / CHECKPOINT_FILE,
        replace(first, state_dict=state, epoch=best_epoch, val_auroc=val_auroc, members=len(members)),
    )
    return FoldResult(
        fold=data.fold,
        best_epoch=best_epoch,
        best_val_auroc=val_auroc,
        epochs_run=sum(r.epochs_run for r in results),
        stopped_early=all(r.stopped_early for r in results),
        seconds=sum(r.seconds for r in results),
        val_nll_calibrated=nll(np.log(np.clip(p, 1e-12, 1.0)), y),
        members=len(members),
    )
