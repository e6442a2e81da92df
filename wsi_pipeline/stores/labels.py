"""The labels table (docs/ARCHITECTURE.md, "Labels table"): the contract between the user's spreadsheet, `wsi train` and `wsi eval`.

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
    has_patient_column: bool = False  # False: patients guessed from TCGA barcodes, else one per slide

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


_EXPECTED = "a comma-separated UTF-8 text file with a header row slide_id,label[,patient_id,split]"
# What spreadsheet programs write instead of text: zip (.xlsx, .ods) and OLE2 (.xls) containers.
_WORKBOOK_MAGIC = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")


def _read_text(path: Path) -> str:
    """The table's text: UTF-8 (with or without BOM) or UTF-16 with BOM (Excel's "Unicode text");
    a workbook or another encoding is one line naming the file and what is expected instead."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WsiError(f"{path}: no such labels file") from None
    except OSError as exc:
        raise WsiError(f"{path}: cannot read labels ({exc.strerror or exc})") from exc
    if data.startswith(_WORKBOOK_MAGIC):
        raise WsiError(
            f"{path}: a spreadsheet workbook (.xlsx/.xls/.ods), not a CSV; export it as CSV UTF-8, {_EXPECTED}"
        )
    encoding = "utf-16" if data.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise WsiError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save it as "
            f"{_EXPECTED}"
        ) from None
    if "\x00" in text:
        raise WsiError(f"{path}: holds NUL bytes, so it is not a text table; expected {_EXPECTED}")
    return text


def _check_spellings(
    path: Path, lines_of_label: dict[str, list[int]], class_names: tuple[str, ...] | None
) -> None:
    """Labels that differ only in case are one class typed two ways, never two classes (or a third)."""
    spellings: dict[str, list[str]] = defaultdict(list)
    for label in [*(class_names or ()), *lines_of_label]:
        if label not in spellings[label.casefold()]:
            spellings[label.casefold()].append(label)
    clashes = [names for names in spellings.values() if len(names) > 1]
    if clashes:
        names = clashes[0]
        where = "; ".join(
            f"{n!r} ({'the class list' if n not in lines_of_label else 'line ' + str(lines_of_label[n][0])})"
            for n in names
        )
        raise WsiError(f"{path}: labels {where} differ only in case; write each class one way")


def read_label_table(path: Path, class_names: list[str] | tuple[str, ...] | None = None) -> LabelTable:
    """Parse and check `path`. With `class_names`, labels must be among them and keep that order."""
    path = Path(path)
    text = _read_text(path)
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
    rows, line_of = _read_rows(path, reader)
    lines_of_label: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        lines_of_label[row.label].append(line_of[row.slide_id])
    _check_spellings(path, lines_of_label, tuple(class_names) if class_names is not None else None)
    return LabelTable(
        path=path,
        rows=tuple(rows),
        class_names=_classes(path, Counter(row.label for row in rows), class_names),
        has_patient_column="patient_id" in header,
    )


def _read_rows(path: Path, reader: csv.DictReader) -> tuple[list[LabelRow], dict[str, int]]:
    """The table's rows, each checked, and the line of each slide id (duplicates and split gaps refused)."""
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
    return rows, {s: lines[0] for s, lines in lines_of.items()}


def _classes(
    path: Path, counts: Counter[str], class_names: list[str] | tuple[str, ...] | None
) -> tuple[str, ...]:
    """The class list given (every label among it), else the sorted labels (at least two)."""
    if class_names is not None:
        unknown = sorted(set(counts) - set(class_names))
        if unknown:
            raise WsiError(
                f"{path}: label(s) {', '.join(repr(u) for u in unknown)} not in the class list "
                f"{', '.join(class_names)}"
            )
        return tuple(class_names)
    if len(counts) < 2:
        only = next(iter(counts))
        raise WsiError(
            f"{path}: only one class ({only!r}, {_plural(counts[only], 'row')}); a classifier needs two or more"
        )
    return tuple(sorted(counts))


def patient_grouping_problem(table: LabelTable) -> str:
    """Why patients may be unknown ('' when they are not): without a patient_id column, slides whose ids
    are not TCGA barcodes are each their own patient, so one patient's slides can straddle train and test."""
    if table.has_patient_column:
        return ""
    guessed = [row.slide_id for row in table.rows if not _TCGA_PATIENT.match(row.slide_id)]
    if not guessed:
        return ""
    return (
        f"{table.path}: no patient_id column and {len(guessed)} slide id(s) are not TCGA barcodes "
        f"(e.g. {guessed[0]}): each such slide is treated as its own patient, so slides of one patient "
        "could land in both train and test; add a patient_id column"
    )


def check_trainable(table: LabelTable) -> None:
    """Training needs two classes present, whatever the class list says."""
    present = {row.label for row in table.rows}
    if len(present) < 2:
        raise WsiError(
            f"{table.path}: only one class ({next(iter(present))!r}) among the slides used; "
            "a classifier needs two or more"
        )
