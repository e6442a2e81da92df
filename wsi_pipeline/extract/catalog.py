"""The built-in extractors: one decorated function each, returning the recipe taken from its model card.

Every entry cites where its numbers come from. Architectures and arguments are those the model cards pass
to `timm.create_model` (and the checkpoints are that timm model's state dict); preprocessing is the model
card's evaluation transform, except that tiles are never centre-cropped unless the card crops (GigaPath),
because the tile store already fixed what the tile covers. Weights come only from `--weights`.
"""

from typing import Any

from wsi_pipeline.errors import ConfigError
from wsi_pipeline.extract.recipes import EXTRACTORS, TIMM_PREFIX, ExtractorRecipe, register_extractor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# H-optimus-0/1 model cards: the mean/std of their own training tiles.
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
CC_BY_NC_ND = "CC-BY-NC-ND-4.0, gated"


def _vit_card(**fields: Any) -> ExtractorRecipe:
    """A pathology ViT as its model card runs it; what most cards share is the default here: 224 px input,
    ImageNet mean/std, the class token, tiles at 20x (0.5 µm/px), a gated non-commercial licence."""
    shared = {
        "input_px": 224,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "pooling": "cls",
        "mpp": 0.5,
        "licence": CC_BY_NC_ND,
    }
    return ExtractorRecipe(**{**shared, **fields})


@register_extractor("retccl")
def retccl() -> ExtractorRecipe:
    """RetCCL (Wang et al., Med Image Anal 2023): ResNet-50 trunk, 2048-d, ImageNet mean/std.

    Source: https://github.com/Xiyue-Wang/RetCCL (checkpoint: a torchvision-layout ResNet-50 state dict
    without `fc`, which timm's resnet50 shares key for key). Fully convolutional: tiles go in at the
    store's tile_px, unresized. Used at about 1 µm/px (224 px over 256 µm, the marugoto/STAMP default).
    """
    return ExtractorRecipe(
        architecture="resnet50",
        input_px=None,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pooling="model",
        feature_dim=2048,
        droppable=("fc.",),
        mpp=256 / 224,
        params_m=23.5,
        licence="GPL-3.0 (code)",
        source="https://github.com/Xiyue-Wang/RetCCL",
    )


@register_extractor("uni")
def uni() -> ExtractorRecipe:
    """UNI (Chen et al., Nat Med 2024): ViT-L/16, layer scale, class token, 1024-d.

    Source: https://huggingface.co/MahmoodLab/UNI (model card: `timm.create_model("vit_large_patch16_224",
    img_size=224, patch_size=16, init_values=1e-5, num_classes=0, dynamic_img_size=True)`, weights
    `pytorch_model.bin` loaded strictly; transform Resize(224), ImageNet mean/std). Trained on 20x
    (about 0.5 µm/px) tiles of Mass-100K.
    """
    return _vit_card(
        architecture="vit_large_patch16_224",
        kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True},
        feature_dim=1024,
        params_m=303.4,
        source="https://huggingface.co/MahmoodLab/UNI",
    )


@register_extractor("uni2-h")
def uni2_h() -> ExtractorRecipe:
    """UNI2-h (MahmoodLab 2025): ViT-H/14 with SwiGLU MLP and 8 register tokens, class token, 1536-d.

    Source: https://huggingface.co/MahmoodLab/UNI2-h (model card `timm_kwargs`: img_size 224, patch_size
    14, depth 24, num_heads 24, init_values 1e-5, embed_dim 1536, mlp_ratio 2.66667*2, no_embed_class,
    mlp_layer SwiGLUPacked, act_layer SiLU, reg_tokens 8, dynamic_img_size, on `vit_giant_patch14_224`;
    transform Resize(224), ImageNet mean/std). Trained on 20x (about 0.5 µm/px) tiles.
    """
    return _vit_card(
        architecture="vit_giant_patch14_224",
        kwargs={
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "no_embed_class": True,
            "mlp_layer": "SwiGLUPacked",
            "act_layer": "silu",
            "reg_tokens": 8,
            "dynamic_img_size": True,
        },
        feature_dim=1536,
        params_m=681.4,
        source="https://huggingface.co/MahmoodLab/UNI2-h",
    )


@register_extractor("virchow2")
def virchow2() -> ExtractorRecipe:
    """Virchow2 (Zimmermann et al., 2024): ViT-H/14, SwiGLU, 4 registers; class token ++ patch-token mean.

    Source: https://huggingface.co/paige-ai/Virchow2 (config.json: `vit_huge_patch14_224`, img_size 224,
    init_values 1e-5, mlp_ratio 5.3375, reg_tokens 4, global_pool "", dynamic_img_size; the card adds
    mlp_layer SwiGLUPacked, act_layer SiLU; transform bicubic resize to 224, ImageNet mean/std; embedding
    = concat(output[:, 0], output[:, 5:].mean(1)), 2560-d). Trained on mixed 5x-40x tiles; 20x (0.5 µm/px)
    is the card's example and the usual choice.
    """
    return _vit_card(
        architecture="vit_huge_patch14_224",
        kwargs={
            "img_size": 224,
            "init_values": 1e-5,
            "mlp_ratio": 5.3375,
            "reg_tokens": 4,
            "mlp_layer": "SwiGLUPacked",
            "act_layer": "silu",
            "dynamic_img_size": True,
        },
        interpolation="bicubic",
        pooling="cls+mean",
        skip_tokens=5,
        feature_dim=2560,
        params_m=631.2,
        source="https://huggingface.co/paige-ai/Virchow2",
    )


def _h_optimus(card: str, licence: str) -> ExtractorRecipe:
    """H-optimus-0 and -1 share architecture and preprocessing; only weights and licence differ."""
    return _vit_card(
        architecture="vit_giant_patch14_reg4_dinov2",
        kwargs={"img_size": 224, "init_values": 1e-5, "global_pool": "token", "dynamic_img_size": False},
        mean=HOPTIMUS_MEAN,
        std=HOPTIMUS_STD,
        feature_dim=1536,
        precision="float16",
        params_m=1134.8,
        licence=licence,
        source=card,
    )


@register_extractor("h-optimus-0")
def h_optimus_0() -> ExtractorRecipe:
    """H-optimus-0 (Bioptimus 2024): ViT-g/14 with 4 registers (DINOv2 layout), class token, 1536-d.

    Source: https://huggingface.co/bioptimus/H-optimus-0 (config: `vit_giant_patch14_reg4_dinov2`,
    img_size 224, global_pool token, init_values 1e-5; the card runs it in float16 on 224 px tiles at
    0.5 µm/px with mean (0.707223, 0.578729, 0.703617), std (0.211883, 0.230117, 0.177517)).
    """
    return _h_optimus("https://huggingface.co/bioptimus/H-optimus-0", "Apache-2.0")


@register_extractor("h-optimus-1")
def h_optimus_1() -> ExtractorRecipe:
    """H-optimus-1 (Bioptimus 2025): H-optimus-0's architecture and preprocessing, new weights; 1536-d.

    Source: https://huggingface.co/bioptimus/H-optimus-1 (same config and usage as H-optimus-0: 224 px at
    0.5 µm/px, float16, the same mean/std). Gated; access for academic research.
    """
    return _h_optimus("https://huggingface.co/bioptimus/H-optimus-1", "gated, academic research")


@register_extractor("gigapath")
def gigapath() -> ExtractorRecipe:
    """Prov-GigaPath tile encoder (Xu et al., Nature 2024): ViT-g/16 DINOv2 layout, class token, 1536-d.

    Source: https://huggingface.co/prov-gigapath/prov-gigapath (config.json: `vit_giant_patch14_dinov2`
    with img_size 224, patch_size 16, embed_dim 1536, depth 40, num_heads 24, init_values 1e-5, mlp_ratio
    5.33334 (SwiGLU from the architecture); transform bicubic Resize(256), CenterCrop(224), ImageNet
    mean/std). Trained on 256 px tiles at 0.5 µm/px: tile 128 µm at 256 px; the crop keeps the centre 224.
    """
    return _vit_card(
        architecture="vit_giant_patch14_dinov2",
        kwargs={
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "init_values": 1e-5,
            "mlp_ratio": 5.33334,
        },
        resize_px=256,
        interpolation="bicubic",
        feature_dim=1536,
        precision="float16",
        params_m=1134.9,
        licence="Apache-2.0",
        source="https://huggingface.co/prov-gigapath/prov-gigapath",
    )


@register_extractor("ctranspath")
def ctranspath() -> ExtractorRecipe:
    """CTransPath (Wang et al., Med Image Anal 2022): Swin-T with a convolutional stem, mean-pooled, 768-d.

    Source: https://github.com/Xiyue-Wang/TransPath (`ctran.py`: `swin_tiny_patch4_window7_224` with
    `embed_layer=ConvStem`, head replaced by Identity; `get_features_CTransPath.py`: Resize(224),
    ImageNet mean/std, `ctranspath.pth` = {"model": state dict} loaded strictly). The checkpoint is in
    timm 0.5's Swin layout; timm's own Swin filter renames it. Used at about 1 µm/px (256 µm / 224 px).
    """
    return ExtractorRecipe(
        architecture="swin_tiny_patch4_window7_224",
        kwargs={"embed_layer": "ConvStem"},
        input_px=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pooling="model",
        feature_dim=768,
        precision="float32",
        checkpoint_filter=True,
        droppable=("head.",),
        mpp=256 / 224,
        params_m=27.5,
        licence="GPL-3.0 (code)",
        source="https://github.com/Xiyue-Wang/TransPath",
    )


def extractor_names() -> list[str]:
    return [*EXTRACTORS.names(), f"{TIMM_PREFIX}<architecture>"]


def named_recipe(name: str) -> ExtractorRecipe:
    """The recipe of a registered name (one-line error listing the names otherwise)."""
    if name not in EXTRACTORS:
        raise ConfigError(f"unknown extractor {name!r}; choose one of: {', '.join(extractor_names())}")
    return EXTRACTORS.get(name).build()


def model_table() -> list[dict[str, str]]:
    """One row per registered extractor, for `wsi extract --list-models` and the README."""
    rows = []
    for entry in EXTRACTORS:
        recipe = entry.build()
        rows.append(
            {
                "name": entry.name,
                "dim": str(recipe.feature_dim),
                "input px": str(recipe.input_px or "any"),
                "µm/px": f"{recipe.mpp:.2f}" if recipe.mpp else "?",
                "tile at": _tile_at(recipe),
                "params": f"{recipe.params_m:g} M" if recipe.params_m else "?",
                "licence": recipe.licence,
            }
        )
    return rows


def _tile_at(recipe: ExtractorRecipe) -> str:
    """The `wsi tile --tile-um / --tile-px` that feed the model the µm/px it was trained at."""
    if recipe.mpp is None:
        return "?"
    px = recipe.model_px or 224
    return f"{recipe.mpp * px:.0f} µm / {px} px"
