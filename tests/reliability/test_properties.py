"""Property-based tests (hypothesis) of what users type by hand: config files, labels tables, slide names.

- Config models (TileConfig, ExtractConfig, TrainConfig, EvalConfig): any valid config survives a YAML
  dump and load unchanged; any unknown key is refused with a one-line `ConfigError` naming the key and
  the file; any value of a wrong type is a one-line `ConfigError` naming the key.
- Labels parser (`wsi_pipeline.stores.labels.read_label_table`): any file content (text, CSV-like text,
  bytes) is either parsed or refused with a `WsiError`, never another exception; a parsed table has
  unique, safe slide ids, patient ids that default correctly, and the sorted labels as classes; a table
  written from rows reads back as those rows.
- Slide ids: any string is either refused or names a visible file directly inside the output folder.
"""

import csv
import io
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from wsi_pipeline.config import dump_config, load_config
from wsi_pipeline.errors import ConfigError, WsiError
from wsi_pipeline.evaluate.config import EvalConfig
from wsi_pipeline.extract.config import ExtractConfig
from wsi_pipeline.ids import check_slide_id
from wsi_pipeline.stores.labels import SPLITS, default_patient_id, read_label_table
from wsi_pipeline.tiling.config import TileConfig
from wsi_pipeline.train.config import SplitFractions, TrainConfig

MODELS = [TileConfig, ExtractConfig, TrainConfig, EvalConfig]
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_FOLDER = Path(tempfile.mkdtemp(prefix="wsi-properties-"))

# Any text but surrogates (not encodable), for file contents.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
# Text a config value can hold: no control characters and no line or paragraph separators (PyYAML turns
# U+0085 and U+2028 inside a plain scalar into line breaks; no real path or name holds them).
VALUE_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=20)
KEY = st.text(
    st.characters(whitelist_categories=("Ll", "Lu", "Lo", "Nd"), whitelist_characters="_-"),
    min_size=1,
    max_size=20,
)


def _scratch(name: str, content: str | bytes) -> Path:
    path = _FOLDER / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


# ------------------------------------------------------------------------------------- config models


def _bounds(info: FieldInfo | None, metadata: tuple[Any, ...] = ()) -> dict[str, Any]:
    found: dict[str, Any] = {}
    items = [*(info.metadata if info else []), *metadata]
    items += [m for item in items if isinstance(item, FieldInfo) for m in item.metadata]
    for item in items:
        for name in ("gt", "ge", "lt", "le"):
            if isinstance(item, getattr(annotated_types, name.capitalize())):
                found[name] = getattr(item, name)
    return found


def _number(kind: type, bounds: dict[str, Any]) -> st.SearchStrategy[Any]:
    if kind is bool:
        return st.booleans()
    if kind is int:
        low = bounds.get("ge", bounds["gt"] + 1 if "gt" in bounds else -(10**6))
        high = bounds.get("le", bounds["lt"] - 1 if "lt" in bounds else 10**6)
        return st.integers(low, high)
    low = bounds.get("ge", bounds.get("gt", -1e6))
    high = bounds.get("le", bounds.get("lt", 1e6))
    return st.floats(low, high, exclude_min="gt" in bounds, exclude_max="lt" in bounds, allow_nan=False)


def _strategy(annotation: Any, info: FieldInfo | None = None) -> st.SearchStrategy[Any]:
    """Valid values of one field, from its type and its `ge`/`gt`/`le`/`lt` constraints."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _number(args[0], _bounds(None, args[1:]))
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(st.none() if a is type(None) else _strategy(a, info) for a in args))
    if origin is Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(VALUE_TEXT, max_size=4)
    if origin is dict:
        return st.dictionaries(
            KEY, st.one_of(st.integers(), st.floats(allow_nan=False), VALUE_TEXT, st.booleans()), max_size=4
        )
    if annotation is SplitFractions:
        return (
            st.tuples(st.floats(0.05, 0.9), st.floats(0.05, 0.9))
            .filter(lambda tv: tv[0] + tv[1] < 0.95)
            .map(lambda tv: SplitFractions(train=tv[0], val=tv[1], test=1.0 - tv[0] - tv[1]))
        )
    if annotation is Path:
        return VALUE_TEXT.map(Path)
    if annotation is str:
        return VALUE_TEXT
    return _number(annotation, _bounds(info))


def configs(model: type[BaseModel]) -> st.SearchStrategy[BaseModel]:
    """Valid configs: every field's own range, and only combinations the model's cross-field rules accept
    (e.g. `mpp_override` needs `mpp`)."""
    fields = {name: _strategy(info.annotation, info) for name, info in model.model_fields.items()}
    drawn = st.fixed_dictionaries({}, optional=fields).map(lambda values: _built(model, values))
    return drawn.filter(lambda config: config is not None)


def _built(model: type[BaseModel], values: dict[str, Any]) -> BaseModel | None:
    try:
        return model(**values)
    except ValidationError:
        return None


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@PROPERTY
@given(data=st.data())
def test_any_valid_config_round_trips_through_yaml(model: type[BaseModel], data: st.DataObject) -> None:
    config = data.draw(configs(model))
    path = _scratch("config.yaml", dump_config(config))
    assert load_config(model, path) == config


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@PROPERTY
@given(key=KEY, value=st.one_of(st.integers(), TEXT, st.none()))
def test_any_unknown_key_is_refused_by_name(model: type[BaseModel], key: str, value: Any) -> None:
    if key in model.model_fields:
        return
    path = _scratch("config.yaml", yaml.safe_dump({key: value}, allow_unicode=True))
    with pytest.raises(ConfigError) as refused:
        load_config(model, path)
    message = str(refused.value)
    assert f"unknown key '{key}'" in message and str(path) in message and "\n" not in message


def _wrong_value(annotation: Any) -> st.SearchStrategy[Any]:
    """A value no field of this type accepts: a mapping where a list or scalar goes, a list elsewhere."""
    text = str(annotation)
    if "dict" in text or annotation is SplitFractions:
        return st.lists(st.integers(), min_size=1, max_size=3)
    return st.dictionaries(KEY, st.integers(), min_size=1, max_size=2)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@PROPERTY
@given(data=st.data())
def test_any_wrong_type_is_a_one_line_config_error(model: type[BaseModel], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(model.model_fields)))
    value = data.draw(_wrong_value(model.model_fields[key].annotation))
    path = _scratch("config.yaml", yaml.safe_dump({key: value}, allow_unicode=True))
    with pytest.raises(ConfigError) as refused:
        load_config(model, path)
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and key in message and "\n" not in message
    with pytest.raises(ConfigError, match=key):
        load_config(model, None, {key: value})  # the same value given as a command-line option


# ------------------------------------------------------------------------------------------- labels


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


HEADERS = st.permutations(["slide_id", "label", "patient_id", "split"]).flatmap(
    lambda columns: st.integers(2, 4).map(
        lambda n: (
            [c for c in columns if c in ("slide_id", "label")]
            + [c for c in columns if c not in ("slide_id", "label")][: n - 2]
        )
    )
)
CELL = st.one_of(
    TEXT, st.sampled_from(["", " ", "a", "b", "train", "val", "test", "TCGA-05-4244-01Z-00-DX1", ".."])
)
CSV_LIKE = st.one_of(
    TEXT,
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
    st.tuples(
        st.one_of(HEADERS, st.lists(CELL, max_size=5)), st.lists(st.lists(CELL, max_size=5), max_size=8)
    ).map(lambda header_rows: _csv_text([header_rows[0], *header_rows[1]])),
)


@PROPERTY
@given(content=st.one_of(CSV_LIKE, st.binary(max_size=80)))
def test_the_labels_parser_parses_or_refuses_anything(content: str | bytes) -> None:
    path = _scratch("labels.csv", content)
    try:
        table = read_label_table(path)
    except WsiError as exc:
        assert str(path) in str(exc)  # the message names the file
        return
    ids = [row.slide_id for row in table.rows]
    assert len(ids) == len(set(ids)) and ids
    for row in table.rows:
        assert check_slide_id(row.slide_id) == row.slide_id and row.label and row.label == row.label.strip()
        assert row.split is None or row.split in SPLITS
        assert row.patient_id
    assert (
        table.class_names == tuple(sorted({row.label for row in table.rows})) and len(table.class_names) >= 2
    )
    assert len({row.split is None for row in table.rows}) == 1


SAFE_ID = (
    st.text(
        st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="-_. "),
        min_size=1,
        max_size=16,
    )
    .map(str.strip)
    .filter(lambda s: s and not s.startswith("."))
)


@PROPERTY
@given(
    ids=st.lists(
        st.one_of(SAFE_ID, st.from_regex(r"TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}-0[12]Z-00-DX[1-3]", fullmatch=True)),
        min_size=2,
        max_size=12,
        unique=True,
    ),
    data=st.data(),
)
def test_a_written_labels_table_reads_back(ids: list[str], data: st.DataObject) -> None:
    labels = data.draw(
        st.lists(st.sampled_from(["LUAD", "LUSC", "normal"]), min_size=len(ids), max_size=len(ids)).filter(
            lambda ls: len(set(ls)) >= 2
        )
    )
    patients = data.draw(st.lists(st.one_of(st.just(""), SAFE_ID), min_size=len(ids), max_size=len(ids)))
    with_split = data.draw(st.booleans())
    splits = data.draw(st.lists(st.sampled_from(SPLITS), min_size=len(ids), max_size=len(ids)))
    header = ["slide_id", "label", "patient_id", *(["split"] if with_split else [])]
    rows = [
        [i, la, p, *([s] if with_split else [])]
        for i, la, p, s in zip(ids, labels, patients, splits, strict=True)
    ]
    table = read_label_table(_scratch("labels.csv", _csv_text([header, *rows])))
    assert [r.slide_id for r in table.rows] == ids
    assert [r.label for r in table.rows] == labels
    assert [r.patient_id for r in table.rows] == [
        p or default_patient_id(i) for i, p in zip(ids, patients, strict=True)
    ]
    assert [r.split for r in table.rows] == (splits if with_split else [None] * len(ids))


@PROPERTY
@given(slide_id=st.from_regex(r"TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}", fullmatch=True), rest=st.text(max_size=12))
def test_tcga_slides_default_to_their_patient_barcode(slide_id: str, rest: str) -> None:
    assert default_patient_id(slide_id + rest) == slide_id.upper()


# ---------------------------------------------------------------------------------------- slide ids


@PROPERTY
@given(slide_id=st.text(max_size=30))
def test_a_slide_id_is_refused_or_a_visible_child_of_the_output_folder(slide_id: str) -> None:
    out = _FOLDER / "out"
    try:
        check_slide_id(slide_id)
    except WsiError:
        return
    target = Path(os.path.normpath(out / f"{slide_id}.zarr"))
    assert target.parent == out and not target.name.startswith(".")
