"""Patient-level, class-stratified, seeded splits.

Slides of one patient share morphology, so a patient in both train and test inflates AUROC; every split
here is made on patients and then expanded to their slides. A patient's class for stratification is its
most common slide label. A labels table with a `split` column is used as given, after the same checks.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import TypeVar

import numpy as np

from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.labels import LabelRow, LabelTable
from wsi_pipeline.stores.run_folder import SplitRow
from wsi_pipeline.train.config import SplitFractions

Label = TypeVar("Label", str, int)  # a label name, or a class index


def patient_strata(pairs: Iterable[tuple[str, Label]]) -> tuple[list[str], list[Label]]:
    """(patient, slide label) pairs -> the patients, sorted, and each one's class for stratification: its most
    common slide label, ties to the smaller label so that a split never depends on row order."""
    labels_of: dict[str, list[Label]] = defaultdict(list)
    for patient, label in pairs:
        labels_of[patient].append(label)
    patients = sorted(labels_of)
    strata = [min(Counter(labels_of[p]).items(), key=lambda kv: (-kv[1], kv[0]))[0] for p in patients]
    return patients, strata


def _split_patients(
    patients: list[str], strata: list[str], fraction: float, seed: int, what: str
) -> tuple[list[str], list[str]]:
    """Stratified (rest, held-out) with `fraction` of patients held out."""
    from sklearn.model_selection import train_test_split  # heavy: scikit-learn

    per_class = Counter(strata)
    n_held = round(fraction * len(patients))
    if min(per_class.values()) < 2 or n_held < len(per_class) or len(patients) - n_held < len(per_class):
        raise WsiError(
            f"too few patients to split off a stratified {what} set ({len(patients)} patients, per class "
            f"{dict(sorted(per_class.items()))}); add slides, give a split column, or change the fractions"
        )
    rest, held = train_test_split(patients, test_size=n_held, stratify=strata, random_state=seed)
    return sorted(rest), sorted(held)


def _rows(table_rows: list[LabelRow], fold: int, split_of_patient: dict[str, str]) -> list[SplitRow]:
    return [
        SplitRow(r.slide_id, r.patient_id, r.label, fold, split_of_patient[r.patient_id]) for r in table_rows
    ]


def make_splits(table: LabelTable, folds: int, fractions: SplitFractions, seed: int) -> list[SplitRow]:
    """Rows (slide, patient, label, fold, split) for one split (`folds == 1`) or k-fold CV."""
    rows = sorted(table.rows, key=lambda r: r.slide_id)
    if table.has_splits:
        if folds > 1:
            raise WsiError(f"{table.path}: has a split column; --folds needs a table without one")
        result = [SplitRow(r.slide_id, r.patient_id, r.label, 0, r.split or "") for r in rows]
    else:
        patients, strata = patient_strata((row.patient_id, row.label) for row in rows)
        stratum = dict(zip(patients, strata, strict=True))
        val_of_rest = fractions.val / (fractions.train + fractions.val)
        result = []
        if folds == 1:
            rest, test = _split_patients(patients, strata, fractions.test, seed, "test")
            train, val = _split_patients(rest, [stratum[p] for p in rest], val_of_rest, seed, "validation")
            split_of = {
                **dict.fromkeys(train, "train"),
                **dict.fromkeys(val, "val"),
                **dict.fromkeys(test, "test"),
            }
            result = _rows(rows, 0, split_of)
        else:
            result = _kfold_rows(rows, patients, strata, folds, val_of_rest, seed)
    check_splits(result, table)
    return result


def _kfold_rows(
    rows: list[LabelRow], patients: list[str], strata: list[str], folds: int, val_of_rest: float, seed: int
) -> list[SplitRow]:
    from sklearn.model_selection import StratifiedKFold  # heavy: scikit-learn

    per_class = Counter(strata)
    if min(per_class.values()) < folds:
        raise WsiError(
            f"{folds}-fold CV needs at least {folds} patients per class, have {dict(sorted(per_class.items()))}"
        )
    stratum = dict(zip(patients, strata, strict=True))
    # One stratum per patient, so StratifiedKFold on patients is StratifiedGroupKFold on slides.
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    result: list[SplitRow] = []
    for fold, (rest_idx, test_idx) in enumerate(splitter.split(np.zeros(len(patients)), strata)):
        rest = [patients[i] for i in rest_idx]
        train, val = _split_patients(rest, [stratum[p] for p in rest], val_of_rest, seed + fold, "validation")
        split_of = {
            **dict.fromkeys(train, "train"),
            **dict.fromkeys(val, "val"),
            **dict.fromkeys((patients[i] for i in test_idx), "test"),
        }
        result.extend(_rows(rows, fold, split_of))
    return result


def check_splits(rows: list[SplitRow], table: LabelTable) -> None:
    """No patient in two splits of a fold; train and val hold every class (val AUROC needs them)."""
    by_fold: dict[int, list[SplitRow]] = defaultdict(list)
    for r in rows:
        by_fold[r.fold].append(r)
    for fold, fold_rows in sorted(by_fold.items()):
        where = f" in fold {fold}" if len(by_fold) > 1 else ""
        splits_of: dict[str, set[str]] = defaultdict(set)
        for r in fold_rows:
            splits_of[r.patient_id].add(r.split)
        straddling = sorted(p for p, s in splits_of.items() if len(s) > 1)
        if straddling:
            raise WsiError(
                f"{table.path}: patient(s) {', '.join(straddling[:8])} have slides in more than one split{where}"
            )
        present = {r.label for r in fold_rows}
        for split in ("train", "val"):
            labels = {r.label for r in fold_rows if r.split == split}
            if labels != present:
                lacking = ", ".join(sorted(present - labels))
                raise WsiError(f"{table.path}: the {split} split{where} has no slide of class {lacking}")
