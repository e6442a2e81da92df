"""Settings of `wsi extract`; defaults equal configs/extract.yaml (a test keeps them in step)."""

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ExtractConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("retccl", description="Registered extractor name, or timm:<architecture>.")
    weights: Path | None = Field(
        None, description="State dict (.pt/.pth/.bin) or .safetensors; never downloaded."
    )
    random_init: bool = Field(False, description="Allow running without weights (demos, tests).")
    batch_size: int = Field(64, ge=1)
    workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        description="DataLoader processes reading tiles (0 = in process); auto = 1 on CPU, cores - 1 (max 16) on CUDA.",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float16", "float32"] = Field("float16", description="Stored feature dtype.")
    precision: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Compute precision: auto = the extractor's preference (bf16) on CUDA, float32 on CPU.",
    )
    slides_root: Path | None = Field(None, description="Folder to find slides by file name when they moved.")
    overwrite: bool = False

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: object) -> object:
        """One clear message instead of one per member of the union."""
        if value == "auto":
            return value
        try:
            count = int(str(value))
        except ValueError:
            count = -1
        if count < 0:
            raise ValueError("expected a number of processes >= 0, or auto")
        return count


MAX_AUTO_WORKERS = 16


def resolve_workers(workers: int | Literal["auto"], device_type: str) -> int:
    """`auto`: on CUDA one reader per core but one (the main process feeds the GPU), at most 16; on CPU one
    reader, because the encoder is the bottleneck there (DESIGN §6) and every reader is a fork of a process
    holding the model, started per slide."""
    if workers != "auto":
        return int(workers)
    if device_type != "cuda":
        return 1
    return max(1, min(MAX_AUTO_WORKERS, (os.cpu_count() or 2) - 1))
