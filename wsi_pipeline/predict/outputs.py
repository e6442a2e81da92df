"""What `wsi predict` writes: `predictions.csv`, `fold_probabilities.csv`, `patients.csv`.

Patient-level rule: `wsi train` gives each slide its own bag and its patient's label (splits keep a
patient's slides together), so a patient's prediction is the mean of its slides' (ensemble) probabilities,
and its predicted class their argmax; the same rule `wsi eval --level patient` applies.
"""

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_pipeline.errors import WsiError
from wsi_pipeline.ids import check_slide_id
from wsi_pipeline.stores.labels import default_patient_id

PATIENT_POOLING = "mean of the patient's slide probabilities (each slide: mean over the folds used)"


@dataclass(frozen=True)
class SlidePrediction:
    slide_id: str
    patient_id: str
    fold_probs: np.ndarray  # (k, n_classes), one row per fold model used
    folds: tuple[int, ...]
    n_tiles: int
    extractor_check: str

    @property
    def probs(self) -> np.ndarray:
        return self.fold_probs.mean(axis=0)


def read_patients(path: Path) -> dict[str, str]:
    """slide_id -> patient_id from a CSV with those two columns; every mistake one line naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise WsiError(f"{path}: cannot read the patients table ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in reader.fieldnames or []]
    if "slide_id" not in header or "patient_id" not in header:
        raise WsiError(f"{path}: expected columns slide_id,patient_id; found {', '.join(header) or 'none'}")
    reader.fieldnames = header
    mapping: dict[str, str] = {}
    for record in reader:
        slide_id, patient = (record.get("slide_id") or "").strip(), (record.get("patient_id") or "").strip()
        if not slide_id and not patient:
            continue
        if not slide_id or not patient:
            raise WsiError(f"{path} line {reader.line_num}: empty slide_id or patient_id")
        check_slide_id(slide_id)
        if mapping.get(slide_id, patient) != patient:
            raise WsiError(f"{path} line {reader.line_num}: slide {slide_id} listed with two patients")
        mapping[slide_id] = patient
    return mapping


def patient_of(slide_id: str, table: dict[str, str]) -> str:
    return table.get(slide_id) or default_patient_id(slide_id)


def _csv(header: list[str], rows: list[list[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _probs_cells(p: np.ndarray) -> list[str]:
    return [f"{v:.6f}" for v in p]


def _folds_cell(folds: tuple[int, ...]) -> str:
    return ";".join(str(f) for f in folds)


def predictions_csv(preds: list[SlidePrediction], classes: tuple[str, ...]) -> str:
    header = ["slide_id", "patient_id", *(f"prob_{c}" for c in classes), "predicted", "n_tiles", "folds"]
    rows = [
        [
            p.slide_id,
            p.patient_id,
            *_probs_cells(p.probs),
            classes[int(p.probs.argmax())],
            p.n_tiles,
            _folds_cell(p.folds),
            p.extractor_check,
        ]
        for p in preds
    ]
    return _csv([*header, "extractor_check"], rows)


def fold_probabilities_csv(preds: list[SlidePrediction], classes: tuple[str, ...]) -> str:
    """Each fold model's probabilities, so the ensemble's mean can be checked by hand."""
    rows = [
        [p.slide_id, fold, *_probs_cells(row)]
        for p in preds
        for fold, row in zip(p.folds, p.fold_probs, strict=True)
    ]
    return _csv(["slide_id", "fold", *(f"prob_{c}" for c in classes)], rows)


def patients_csv(preds: list[SlidePrediction], classes: tuple[str, ...]) -> str:
    """One row per patient: the mean of its slides' probabilities (`PATIENT_POOLING`)."""
    by_patient: dict[str, list[SlidePrediction]] = {}
    for p in preds:
        by_patient.setdefault(p.patient_id, []).append(p)
    rows = []
    for patient, slides in sorted(by_patient.items()):
        mean = np.mean([s.probs for s in slides], axis=0)
        folds = tuple(sorted({f for s in slides for f in s.folds}))
        rows.append(
            [
                patient,
                len(slides),
                ";".join(s.slide_id for s in slides),
                *_probs_cells(mean),
                classes[int(mean.argmax())],
                sum(s.n_tiles for s in slides),
                _folds_cell(folds),
            ]
        )
    header = ["patient_id", "n_slides", "slide_ids", *(f"prob_{c}" for c in classes), "predicted"]
    return _csv([*header, "n_tiles", "folds"], rows)
