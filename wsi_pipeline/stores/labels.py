"""The labels table (DESIGN §3): the contract between the user's spreadsheet, `wsi train` and `wsi eval`.

Columns `slide_id` and `label` are required; `patient_id` (default: the TCGA patient barcode, else the
slide id) and `split` (`train`/`val`/`test`) are optional. Every problem is one line that names the file,
because a labels table is typed by hand and its mistakes must be easy to find.
"""

import csv
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from wsi_pipeline.errors import WsiError
from wsi_pipeline.ids import check_slide_id

REQUIRED_COLUMNS = ("slide_id", "label")
SPLITS = ("train", "val", "test")
# TCGA barcodes start with the patient: project-TSS-participant, e.g. TCGA-05-4244-01Z-00-DX1 -> TCGA-05-4244.
_TCGA_PATIENT = re.compile(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}", re.IGNORECASE)


@dataclass(frozen=True)
class LabelRow:
    slide_id: str
    patient_id: str
    label: str
    split: str | None


@dataclass(frozen=True)
class LabelTable:
    path: Path
    rows: tuple[LabelRow, ...]
    class_names: tuple[str, ...]  # index in this tuple = class index of the model's output

    @property
    def has_splits(self) -> bool:
        return all(row.split is not None for row in self.rows)

    def class_index(self, label: str) -> int:
        return self.class_names.index(label)

    def by_slide(self) -> dict[str, LabelRow]:
        return {row.slide_id: row for row in self.rows}


def default_patient_id(slide_id: str) -> str:
    """TCGA slides of one patient share the 12-character barcode prefix; other slides are their own patient."""
    match = _TCGA_PATIENT.match(slide_id)
    return match.group(0).upper() if match else slide_id


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_label_table(path: Path, class_names: list[str] | tuple[str, ...] | None = None) -> LabelTable:
    """Parse and check `path`. With `class_names`, labels must be among them and keep that order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise WsiError(f"{path}: no such labels file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WsiError(f"{path}: cannot read labels ({exc})") from exc
    if not text.strip():
        raise WsiError(f"{path}: empty labels file; expected a header with columns slide_id,label")

    reader = csv.DictReader(text.splitlines())
    header = [name.strip() for name in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        hint = " (the file must be comma-separated)" if len(header) == 1 else ""
        raise WsiError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'none'}{hint}"
        )
    reader.fieldnames = header

    rows: list[LabelRow] = []
    lines_of: dict[str, list[int]] = defaultdict(list)
    for record in reader:
        line = reader.line_num
        cells = {k: (v or "").strip() for k, v in record.items() if k is not None}
        if not any(cells.values()):
            continue
        slide_id, label = cells["slide_id"], cells["label"]
        if not slide_id:
            raise WsiError(f"{path} line {line}: empty slide_id")
        if not label:
            raise WsiError(f"{path} line {line}: slide {slide_id} has an empty label")
        try:
            check_slide_id(slide_id)
        except WsiError as exc:
            raise WsiError(f"{path} line {line}: {exc}") from None
        split = cells.get("split") or None
        if split is not None and split not in SPLITS:
            raise WsiError(f"{path} line {line}: split {split!r} is not one of {', '.join(SPLITS)}")
        patient_id = cells.get("patient_id") or default_patient_id(slide_id)
        rows.append(LabelRow(slide_id, patient_id, label, split))
        lines_of[slide_id].append(line)

    if not rows:
        raise WsiError(f"{path}: no rows below the header")
    duplicates = [
        f"{s} (lines {', '.join(map(str, lines))})" for s, lines in lines_of.items() if len(lines) > 1
    ]
    if duplicates:
        raise WsiError(f"{path}: duplicate slide ids: {_listing(duplicates)}")
    with_split = sum(row.split is not None for row in rows)
    if 0 < with_split < len(rows):
        raise WsiError(
            f"{path}: column split is filled for {with_split} of {len(rows)} rows; fill all or none"
        )

    counts = Counter(row.label for row in rows)
    if class_names is not None:
        unknown = sorted(set(counts) - set(class_names))
        if unknown:
            raise WsiError(
                f"{path}: label(s) {', '.join(repr(u) for u in unknown)} not in the class list "
                f"{', '.join(class_names)}"
            )
        classes = tuple(class_names)
    else:
        classes = tuple(sorted(counts))
    if len(counts) < 2 and class_names is None:
        only = next(iter(counts))
        raise WsiError(
            f"{path}: only one class ({only!r}, {_plural(counts[only], 'row')}); a classifier needs two or more"
        )
    return LabelTable(path=path, rows=tuple(rows), class_names=classes)


def check_trainable(table: LabelTable) -> None:
    """Training needs two classes present, whatever the class list says."""
    present = {row.label for row in table.rows}
    if len(present) < 2:
        raise WsiError(
            f"{table.path}: only one class ({next(iter(present))!r}) among the slides used; "
            "a classifier needs two or more"
        )
