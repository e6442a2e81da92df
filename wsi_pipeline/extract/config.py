"""Settings of `wsi extract`: each default stated here once; `wsi extract --print-config` resolves them."""

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ExtractConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "retccl", description="Registered extractor (wsi extract --list-models), or timm:<architecture>."
    )
    extractor_spec: Path | None = Field(
        None, description="YAML recipe of any timm model (instead of --model); copied into every bag."
    )
    weights: Path | None = Field(
        None, description="State dict (.pt/.pth/.bin) or .safetensors; never downloaded."
    )
    random_init: bool = Field(False, description="Allow running without weights (demos, tests).")
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="Tiles per forward pass; auto = 32 on CPU, from free GPU memory on CUDA (at most 1024).",
    )
    workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        description="DataLoader processes reading tiles (0 = in process); auto = 1 on CPU, cores - 1 (max 16) on CUDA.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto (CUDA when present), cpu or cuda"
    )
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads of the encoder; null = the physical cores"
    )
    dtype: Literal["float16", "float32"] = Field("float16", description="Stored feature dtype.")
    precision: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Compute precision: auto = the extractor's preference (bf16) on CUDA, float32 on CPU.",
    )
    stain_norm: Literal["none", "macenko", "reinhard", "vahadane"] = Field(
        "none", description="Stain normalisation of every tile before encoding (tiatoolbox)."
    )
    stain_target: Path | None = Field(
        None, description="Reference image the stain normaliser is fitted to (none: the bundled H&E tile)."
    )
    slides_root: Path | None = Field(None, description="Folder to find slides by file name when they moved.")
    overwrite: bool = Field(False, description="redo bags that are already complete")

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: object) -> object:
        """One clear message instead of one per member of the union."""
        return _count_or_auto(value, 0, "a number of processes >= 0, or auto")

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: object) -> object:
        return _count_or_auto(value, 1, "a number of tiles >= 1, or auto")


def _count_or_auto(value: object, minimum: int, expected: str) -> object:
    if value == "auto":
        return value
    try:
        count = int(str(value))
    except ValueError:
        count = minimum - 1
    if count < minimum:
        raise ValueError(f"expected {expected}")
    return count


MAX_AUTO_WORKERS = 16


def resolve_workers(workers: int | Literal["auto"], device_type: str) -> int:
    """`auto`: on CUDA one reader per core but one (the main process feeds the GPU), at most 16; on CPU one
    reader, because the encoder is the bottleneck there (benchmarks/RESULTS.md, "Extraction") and every reader is a fork of a process
    holding the model, started per slide."""
    if workers != "auto":
        return int(workers)
    if device_type != "cuda":
        return 1
    return max(1, min(MAX_AUTO_WORKERS, (os.cpu_count() or 2) - 1))
