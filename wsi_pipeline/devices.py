"""The torch device named in a train or eval config, checked before any work starts."""

import torch

from wsi_pipeline.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; a named device that does not exist here is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name} requested but no CUDA device is available")
    return device
