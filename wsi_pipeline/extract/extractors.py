"""Built-in extractors: RetCCL, and any timm architecture as `timm:<name>`."""

from pathlib import Path

import torch

from wsi_pipeline.errors import WsiError
from wsi_pipeline.extract.registry import ExtractorSpec, register_extractor
from wsi_pipeline.extract.transforms import IMAGENET_MEAN, IMAGENET_STD, TileTransform
from wsi_pipeline.extract.weights import load_state_dict, match_state_dict


@register_extractor("retccl")
def retccl(weights: Path | None) -> ExtractorSpec:
    """RetCCL (Wang et al., 2023): a ResNet-50 trunk, 2048-d, ImageNet normalisation.

    Trained on 224 px tiles of about 1 µm/px: the default tile store (224 px over 256 µm) feeds it exactly
    that. Being fully convolutional it takes tiles at whatever tile_px the store has, unresized. Its
    published checkpoint is a plain torchvision-layout state dict (318 tensors, no `fc`), which timm's
    resnet50 shares key for key.
    """
    import timm

    model = timm.create_model("resnet50", pretrained=False, num_classes=0)
    if weights is not None:
        state = match_state_dict(
            load_state_dict(weights),
            model,
            weights,
            droppable=("fc.",),
            expected="a ResNet-50 state dict in torchvision layout (RetCCL)",
        )
        model.load_state_dict(state, strict=True)
    return ExtractorSpec(
        model=model,
        transform=TileTransform(None, IMAGENET_MEAN, IMAGENET_STD),
        feature_dim=2048,
        precision=torch.bfloat16,
    )


def timm_extractor(architecture: str, weights: Path | None) -> ExtractorSpec:
    """Any timm model without its classifier; preprocessing from its pretrained config.

    Tiles are resized whole to the model's input (no centre crop): the tile's physical size is fixed by the
    tile store, and cropping would drop a border of every tile.
    """
    import timm

    if not timm.is_model(architecture):
        raise WsiError(f"timm has no architecture {architecture!r} (see timm.list_models())")
    model = timm.create_model(architecture, pretrained=False, num_classes=0)
    if weights is not None:
        head = model.pretrained_cfg.get("classifier") or ()
        heads = (head,) if isinstance(head, str) else tuple(head)
        state = match_state_dict(
            load_state_dict(weights),
            model,
            weights,
            droppable=tuple(f"{h}." for h in heads),
            expected=f"a timm {architecture} state dict",
        )
        model.load_state_dict(state, strict=True)
    data = timm.data.resolve_model_data_config(model)
    _, height, width = data["input_size"]
    if height != width:
        raise WsiError(
            f"timm:{architecture} takes {height}x{width} inputs; only square inputs fit square tiles"
        )
    feature_dim = getattr(model, "head_hidden_size", None) or model.num_features
    return ExtractorSpec(
        model=model,
        transform=TileTransform(height, data["mean"], data["std"]),
        feature_dim=int(feature_dim),
        precision=torch.bfloat16,
    )
