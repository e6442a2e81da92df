"""Loading extractor weights safely and strictly.

Checkpoints come from other people, so they are read without running code: `torch.load(weights_only=True)`
or safetensors. A checkpoint that needs pickle code execution is refused, not loaded. Keys are checked
strictly because a partially loaded encoder still runs and silently produces meaningless features.
"""

import hashlib
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from wsi_pipeline.errors import WsiError
from wsi_pipeline.stores.torch_files import load_torch_data

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_DATA_PARALLEL_PREFIX = "module."
_SHOWN_KEYS = 8


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or of a torch checkpoint that loads without executing code."""
    path = Path(path)
    if not path.is_file():
        raise WsiError(f"{path}: no such weights file")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file  # heavy: safetensors (with torch)

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise WsiError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc
    obj = load_torch_data(
        path,
        kind="readable torch checkpoint",
        allowed="save a plain state dict (torch.save(model.state_dict(), ...)) or a .safetensors file",
    )
    return _tensors_only(_unwrap(obj), path)


def _unwrap(obj: object) -> object:
    """Training scripts often save {'state_dict': ...} or {'model': ...}; the tensors are inside."""
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                return obj[key]
    return obj


def _tensors_only(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not obj:
        raise WsiError(f"{path}: expected a state dict (names -> tensors), found {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WsiError(f"{path}: expected a state dict of tensors; not tensors: {_listing(bad)}")
    return obj


def match_state_dict(
    state: dict[str, torch.Tensor], model: nn.Module, path: Path, *, droppable: Iterable[str], expected: str
) -> dict[str, torch.Tensor]:
    """`state` renamed for `model`, or a one-line error listing what is missing, extra or mis-shaped.

    Tolerated: a `module.` prefix (saved from DataParallel) and keys under `droppable` prefixes (the
    classifier head, which a feature extractor does not have). Anything else must match exactly.
    """
    if all(k.startswith(_DATA_PARALLEL_PREFIX) for k in state):
        state = {k[len(_DATA_PARALLEL_PREFIX) :]: v for k, v in state.items()}
    target = model.state_dict()
    drop = tuple(droppable)
    state = {k: v for k, v in state.items() if k in target or not k.startswith(drop)}
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    mis_shaped = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in target.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {_listing(unexpected)}")
    if mis_shaped:
        problems.append(f"{len(mis_shaped)} keys with other shapes: {_listing(mis_shaped)}")
    if problems:
        raise WsiError(f"{path}: not {expected} ({len(state)} tensors); " + "; ".join(problems))
    return state


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f", ... (+{len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")
