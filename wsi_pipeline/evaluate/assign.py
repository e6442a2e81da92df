"""Which fold model scores which slide, so that no model ever scores a slide it trained or validated on.

A slide counts as *seen* by a fold when the fold's train or validation split holds the slide itself or
another slide of its patient (slides of one patient share morphology). Sources of a slide's prediction:

- `out-of-fold`: the folds that did not see it (in k-fold CV: the one fold where its patient was test);
- `ensemble`: no fold saw it (an external cohort), so the mean of every fold's probabilities;
- `held-out`: a single-split run's model on a slide it did not see (its test split, or a new cohort);
- `seen`: a model that trained or validated on it (`--split val/train`, or `--include-seen`);
- excluded: every fold saw it (possible only with hand-made splits): not scored at all.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass

from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.labels import LabelTable
from wsi_pipeline.stores.run_folder import SPLITS_FILE, RunInfo, SplitRow, read_splits

SOURCES = ("out-of-fold", "ensemble", "held-out", "seen")


@dataclass(frozen=True)
class Assignment:
    folds_of: dict[str, list[int]]  # slide -> the folds whose mean probability is its prediction
    source: dict[str, str]  # slide -> one of SOURCES
    excluded: tuple[str, ...] = ()  # slides every fold trained or validated on

    def counts(self) -> dict[str, int]:
        counted = Counter(self.source.values())
        return {**{s: counted[s] for s in SOURCES}, "excluded": len(self.excluded)}


def assign_slides(info: RunInfo, split: str, table: LabelTable, include_seen: bool = False) -> Assignment:
    """The folds that score each slide of `split` (a split of the run's splits.csv, or `all` labelled)."""
    rows = read_splits(info.run_dir / SPLITS_FILE)
    if split == "all":
        return _assign_cohort(info, rows, table, include_seen)
    folds_of: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        if row.split == split:
            folds_of[row.slide_id].append(row.fold)
    if not folds_of:
        raise WsiError(f"{info.run_dir / SPLITS_FILE}: no slides in split {split!r}")
    labelled = table.by_slide()
    unlabelled = sorted(s for s in folds_of if s not in labelled)
    if unlabelled:
        raise WsiError(
            f"{table.path}: {len(unlabelled)} slide(s) of split {split!r} have no label: {', '.join(unlabelled[:8])}"
        )
    kind = "seen" if split != "test" else ("out-of-fold" if info.folds > 1 else "held-out")
    return Assignment(dict(sorted(folds_of.items())), dict.fromkeys(sorted(folds_of), kind))


def _seen_by_fold(rows: list[SplitRow], n_folds: int) -> list[tuple[set[str], set[str]]]:
    """Per fold: (slide ids, patient ids) of its train and validation splits."""
    seen: list[tuple[set[str], set[str]]] = [(set(), set()) for _ in range(n_folds)]
    for row in rows:
        if row.split in ("train", "val") and 0 <= row.fold < n_folds:
            seen[row.fold][0].add(row.slide_id)
            seen[row.fold][1].add(row.patient_id)
    return seen


def _assign_cohort(info: RunInfo, rows: list[SplitRow], table: LabelTable, include_seen: bool) -> Assignment:
    seen = _seen_by_fold(rows, info.folds)
    folds_of: dict[str, list[int]] = {}
    source: dict[str, str] = {}
    excluded, refused = [], []
    for row in sorted(table.rows, key=lambda r: r.slide_id):
        unseen = [
            f
            for f, (slides, patients) in enumerate(seen)
            if row.slide_id not in slides and row.patient_id not in patients
        ]
        if len(unseen) == info.folds:
            folds_of[row.slide_id], source[row.slide_id] = (
                unseen,
                "ensemble" if info.folds > 1 else "held-out",
            )
        elif unseen:
            folds_of[row.slide_id], source[row.slide_id] = unseen, "out-of-fold"
        elif info.folds > 1:
            excluded.append(row.slide_id)
        elif include_seen:
            folds_of[row.slide_id], source[row.slide_id] = [0], "seen"
        else:
            refused.append(row.slide_id)
    if refused:
        raise WsiError(
            f"{table.path}: {len(refused)} slide(s) were in this run's train or validation split (by slide or "
            f"patient id, e.g. {', '.join(refused[:3])}); --split all would score them as held-out: use "
            "--split test, another cohort, or --include-seen to score them labelled as seen"
        )
    if not folds_of:
        raise WsiError(
            f"{table.path}: every slide was trained or validated on by every fold; nothing to evaluate"
        )
    return Assignment(folds_of, source, tuple(excluded))
