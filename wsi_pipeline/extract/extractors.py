"""Building an encoder from its recipe: the timm network, named layers resolved, pooling, weights.

`build_model(recipe, weights)` makes `timm.create_model(architecture, num_classes=0, **kwargs)` (with
`mlp_layer`, `act_layer`, `norm_layer`, `embed_layer` given by name in the recipe), wraps it so that it
returns one vector per tile as the recipe's pooling says, and loads the weights strictly.
`timm_recipe(architecture)` is the recipe of a bare `timm:<architecture>`: preprocessing from timm's
pretrained config for it.
"""

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsi_pipeline.errors import ConfigError, WsiError
from wsi_pipeline.extract.recipes import ExtractorRecipe
from wsi_pipeline.extract.weights import load_state_dict, match_state_dict

_LAYER_KWARGS = ("mlp_layer", "act_layer", "norm_layer", "embed_layer")


class ConvStem(nn.Module):
    """CTransPath's patch embedding: two stride-2 3x3 conv-BN-ReLU, then a 1x1 conv to embed_dim.

    As described in TransPath's `ctran.py` (Wang et al. 2022): channels embed_dim/8 then embed_dim/4,
    patch size 4, an optional norm over channels. timm >= 0.9 Swin wants NHWC out, so the tokens are
    returned as (B, H/4, W/4, C) rather than flattened; the parameters and their names are the same.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: type[nn.Module] | None = None,
        **_: Any,  # strict_img_size, output_fmt, device/dtype hints of newer timm versions
    ) -> None:
        super().__init__()
        if patch_size != 4 or embed_dim % 8:
            raise ValueError("ConvStem needs patch_size 4 and embed_dim divisible by 8")
        side = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.img_size = side
        self.patch_size = (4, 4)
        self.grid_size = (side[0] // 4, side[1] // 4)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        layers: list[nn.Module] = []
        channels_in, channels_out = in_chans, embed_dim // 8
        for _ in range(2):
            layers += [
                nn.Conv2d(channels_in, channels_out, kernel_size=3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels_out),
                nn.ReLU(inplace=True),
            ]
            channels_in, channels_out = channels_out, channels_out * 2
        layers.append(nn.Conv2d(channels_in, embed_dim, kernel_size=1))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class TokenPool(nn.Module):
    """A ViT's final tokens -> class token, patch-token mean, or both concatenated.

    `skip` leading tokens (class + registers) are left out of the mean.
    """

    def __init__(self, trunk: nn.Module, pooling: str, skip: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.pooling = pooling
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk.forward_features(x)
        cls = tokens[:, 0]
        if self.pooling == "cls":
            return cls
        mean = tokens[:, self.skip :].mean(dim=1)
        return mean if self.pooling == "mean" else torch.cat([cls, mean], dim=-1)


def create_trunk(recipe: ExtractorRecipe, *, skip_init: bool = False) -> nn.Module:
    """The recipe's timm network, random weights; its state dict is the checkpoint's published layout.

    `skip_init` (with `torch.device("meta")`: shapes only, no memory) skips timm's weight init where the
    architecture allows it, which on `meta` costs seconds for a ViT-g and means nothing there.
    """
    import timm  # heavy: timm

    if not timm.is_model(recipe.architecture):
        raise ConfigError(f"timm has no architecture {recipe.architecture!r} (see timm.list_models())")
    kwargs = {k: _resolve_layer(k, v) if k in _LAYER_KWARGS else v for k, v in recipe.kwargs.items()}
    try:
        if skip_init:
            try:
                return timm.create_model(
                    recipe.architecture, pretrained=False, num_classes=0, weight_init="skip", **kwargs
                )
            except TypeError:
                pass  # no weight_init argument (CNNs): their init is cheap anyway
        return timm.create_model(recipe.architecture, pretrained=False, num_classes=0, **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(
            f"timm cannot build {recipe.architecture} with {recipe.kwargs}: {' '.join(str(exc).split())}"
        ) from exc


def pooled(recipe: ExtractorRecipe, trunk: nn.Module) -> nn.Module:
    """`trunk` returning one vector per tile, as the recipe's pooling says."""
    if recipe.pooling == "model":
        return trunk
    if not hasattr(trunk, "forward_features") or not hasattr(trunk, "num_prefix_tokens"):
        raise ConfigError(f"pooling {recipe.pooling!r} needs a ViT-like timm model; use pooling: model")
    skip = recipe.skip_tokens if recipe.skip_tokens is not None else int(trunk.num_prefix_tokens)
    return TokenPool(trunk, recipe.pooling, skip)


def _resolve_layer(kwarg: str, value: object) -> object:
    """A layer named in a recipe -> the class timm expects (names keep recipes plain data)."""
    if not isinstance(value, str):
        return value
    from timm import layers  # heavy: timm

    if kwarg == "embed_layer" and value == "ConvStem":
        return ConvStem
    if kwarg == "act_layer":
        try:
            return layers.get_act_layer(value)
        except (KeyError, ValueError):
            pass
    if kwarg == "norm_layer":
        try:
            return layers.get_norm_layer(value)
        except (KeyError, ValueError, AssertionError):
            pass
    found = getattr(layers, value, None) or getattr(nn, value, None)
    if not isinstance(found, type) and not callable(found):
        raise ConfigError(f"{kwarg}: no layer named {value!r} in timm.layers or torch.nn")
    return found


def build_model(recipe: ExtractorRecipe, weights: Path | None, label: str) -> nn.Module:
    """The network of `recipe`, with `weights` loaded strictly (random init when None), pooled.

    With weights, the network is built on `meta` and the checkpoint's tensors are assigned to it: no
    random init to pay for, and a ViT-g needs its 4.5 GB once, not twice.
    """
    if weights is None:
        return pooled(recipe, create_trunk(recipe))
    state = load_state_dict(weights)
    with torch.device("meta"):
        trunk = create_trunk(recipe, skip_init=True)
    if recipe.checkpoint_filter:
        state = _timm_filter(recipe.architecture, state, trunk)
    state = match_state_dict(
        state, trunk, weights, droppable=recipe.droppable, expected=f"a {label} checkpoint"
    )
    target = trunk.state_dict()
    state = {k: v.to(target[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    trunk.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in trunk.buffers()):  # buffers computed at build time, not saved (Swin's masks)
        trunk = create_trunk(recipe, skip_init=True)
        trunk.load_state_dict(state, strict=True)
    return pooled(recipe, trunk)


def _timm_filter(architecture: str, state: dict[str, torch.Tensor], trunk: nn.Module) -> dict:
    """timm's converter of older layouts for this architecture's family (renames, drops derived buffers)."""
    filter_fn = getattr(sys.modules[type(trunk).__module__], "checkpoint_filter_fn", None)
    if filter_fn is None:
        raise WsiError(f"timm has no checkpoint filter for {architecture}; set checkpoint_filter: false")
    return filter_fn(state, trunk)


def timm_recipe(architecture: str) -> ExtractorRecipe:
    """A bare `timm:<architecture>`: its own pooled output, preprocessing from timm's pretrained config.

    Tiles are resized whole to the model's input (no centre crop): the tile's physical size is fixed by
    the tile store, and cropping would drop a border of every tile.
    """
    import timm  # heavy: timm

    if not timm.is_model(architecture):
        raise ConfigError(f"timm has no architecture {architecture!r} (see timm.list_models())")
    with torch.device("meta"):
        model = timm.create_model(architecture, pretrained=False, num_classes=0)
    data = timm.data.resolve_model_data_config(model)
    _, height, width = data["input_size"]
    if height != width:
        raise WsiError(
            f"timm:{architecture} takes {height}x{width} inputs; only square inputs fit square tiles"
        )
    head = model.pretrained_cfg.get("classifier") or ()
    heads = (head,) if isinstance(head, str) else tuple(head)
    interpolation = data.get("interpolation")
    return ExtractorRecipe(
        architecture=architecture,
        input_px=height,
        interpolation="bicubic" if interpolation == "bicubic" else "bilinear",
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
        pooling="model",
        feature_dim=int(getattr(model, "head_hidden_size", None) or model.num_features),
        droppable=tuple(f"{h}." for h in heads),
        source=f"timm {timm.__version__} pretrained config of {architecture}",
    )
