"""Running an encoder over batches of tiles: device, precision, memory format, streaming to the bag."""

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from wsi_pipeline.errors import SlideError, WsiError
from wsi_pipeline.extract.dataset import TileBatch
from wsi_pipeline.extract.transforms import TileTransform
from wsi_pipeline.stores.feature_bag import BagWriter

_PRECISIONS = {"bfloat16": torch.bfloat16, "float16": torch.float16}
CPU_AUTO_BATCH = 32  # on CPU a bigger batch is no faster, only larger
MAX_AUTO_BATCH = 1024
_PROBE_TILES = 8
_GPU_SHARE = 0.5  # of the free memory: room for the loader's pinned batches and allocator slack


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None = plain float32

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def precision_name(self) -> str:
        return "float32" if self.autocast_dtype is None else str(self.autocast_dtype).removeprefix("torch.")

    def autocast(self) -> AbstractContextManager[object]:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def resolve_runtime(device: str, precision: str, preferred: torch.dtype) -> Runtime:
    """`auto` picks CUDA when present; `auto` precision is the extractor's choice on CUDA, float32 on CPU."""
    if device == "cuda" and not torch.cuda.is_available():
        raise WsiError("--device cuda: no CUDA device is available (use --device auto or cpu)")
    resolved = torch.device(
        "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    if precision == "auto":
        autocast_dtype = preferred if resolved.type == "cuda" else None
        if (
            autocast_dtype == torch.bfloat16
            and resolved.type == "cuda"
            and not torch.cuda.is_bf16_supported()
        ):
            autocast_dtype = torch.float16
    else:
        autocast_dtype = _PRECISIONS.get(precision)
    if resolved.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    return Runtime(device=resolved, autocast_dtype=autocast_dtype)


def prepare_model(model: nn.Module, runtime: Runtime) -> nn.Module:
    """Eval mode, frozen, channels_last (faster for ResNet-50 even on CPU; benchmarks/bench_extract.py)."""
    model = model.eval().requires_grad_(False)
    return model.to(device=runtime.device, memory_format=torch.channels_last)


def resolve_batch_size(
    batch_size: int | str, model: nn.Module, runtime: Runtime, input_px: int | None
) -> int:
    """`auto`: 32 on CPU; on CUDA, measured: a probe batch's activation memory per tile, scaled to half of
    the free memory, rounded down to a power of two (at most 1024)."""
    if batch_size != "auto":
        return int(batch_size)
    if not runtime.is_cuda:
        return CPU_AUTO_BATCH
    side = input_px or 224
    torch.cuda.synchronize(runtime.device)
    torch.cuda.reset_peak_memory_stats(runtime.device)
    before = torch.cuda.memory_allocated(runtime.device)
    images = torch.zeros(_PROBE_TILES, 3, side, side, device=runtime.device)
    with torch.inference_mode():
        forward(model, images, runtime)
    per_tile = max(1.0, (torch.cuda.max_memory_allocated(runtime.device) - before) / _PROBE_TILES)
    free, _ = torch.cuda.mem_get_info(runtime.device)
    fits = max(1, int(free * _GPU_SHARE / per_tile))
    return min(MAX_AUTO_BATCH, 1 << (fits.bit_length() - 1))


def forward(model: nn.Module, images: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Features (B, D) in float32 on the model's device; call under `torch.inference_mode()`."""
    images = images.to(runtime.device, non_blocking=runtime.is_cuda)
    images = images.contiguous(memory_format=torch.channels_last)
    with runtime.autocast():
        return model(images).float()


def extract_into(
    model: nn.Module,
    transform: TileTransform,
    batches: Iterable[TileBatch],
    runtime: Runtime,
    writer: BagWriter,
    slide_name: str,
    on_batch: Callable[[int], None],
) -> None:
    """Stream every batch's features into `writer`, in the order the tiles come (the store's order).

    Batches hold uint8 tiles; they are normalised on the model's device, right before the forward.
    """
    with torch.inference_mode():
        for images, indices, errors in batches:
            failed = next((e for e in errors if e), None)
            if failed is not None:
                raise SlideError(f"{slide_name}: cannot read {failed}")
            first = int(indices[0])
            if first != writer.n_written or int(indices[-1]) != first + len(indices) - 1:
                raise RuntimeError(f"{slide_name}: tiles arrived out of order (batch starts at {first})")
            tiles = images.to(runtime.device, non_blocking=runtime.is_cuda)
            features = forward(model, transform.normalize(tiles), runtime)
            writer.write(features.cpu().numpy())
            on_batch(len(indices))
