"""Shared constants and builders for the model tests."""

import torch

from wsi_pipeline.models import MILModel, build_model

ALL_MODELS = ["abmil", "mean_linear", "meanmax_mlp", "transmil", "vit", "vit_sf", "vit_sf_ca", "vit_sima"]
VITS = ["vit", "vit_sf", "vit_sf_ca", "vit_sima"]
IN_DIM = 24

# Narrow versions of each architecture: the algebra under test does not depend on width, and unit tests
# must stay fast on a shared 2-core machine. TransMIL gets fewer landmarks than tokens so the Nystrom
# approximation is really exercised.
NARROW: dict[str, dict[str, object]] = {
    **{name: {"dim": 32, "heads": 4, "dim_head": 8, "mlp_dim": 48} for name in VITS},
    "abmil": {"embed_dim": 40, "attention_dim": 16},
    "mean_linear": {},
    "meanmax_mlp": {"embed_dim": 16},
    "transmil": {"dim": 32, "heads": 4, "dim_head": 8, "landmarks": 6, "dropout": 0.0},
}


def small_model(name: str, n_classes: int = 2, dtype: torch.dtype = torch.float32, **overrides) -> MILModel:
    """A narrow model in eval mode; `overrides` win over the narrow settings."""
    config = {**NARROW[name], **overrides}
    return build_model(name, in_dim=IN_DIM, n_classes=n_classes, **config).to(dtype).eval()


def bag(n: int, batch: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(batch, n, IN_DIM, dtype=dtype)


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    """Like torch.testing.assert_close, without its multi-second import of torch.distributed."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    expected = expected.to(actual.dtype)
    bad = (actual - expected).abs() > atol + rtol * expected.abs()
    assert not bad.any(), (
        f"{int(bad.sum())}/{bad.numel()} elements differ; max abs diff "
        f"{(actual - expected).abs().max().item():.3g} (rtol {rtol}, atol {atol})"
    )
