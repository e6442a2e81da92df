"""The foundation-model extractors against their model cards.

1. Full size, on the `meta` device (shapes only: no memory, no compute): every registered architecture has
   the published parameter count, the tensor shapes of the published checkpoints, and the declared dim.
2. One small real forward per family: the model card's own construction and transform, written out here
   independently (timm with the card's arguments, torchvision transforms on a PIL tile, the card's pooling),
   at depth 1, with random weights saved in the card's checkpoint layout; `build_extractor` must load that
   file strictly and give the same features.
"""

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file
from torchvision import transforms

from tests.extract.helpers import CMU
from wsi_pipeline.errors import WsiError
from wsi_pipeline.extract.catalog import extractor_names, named_recipe
from wsi_pipeline.extract.extractors import ConvStem, create_trunk, pooled
from wsi_pipeline.extract.registry import build_extractor

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
HOPTIMUS = {"mean": (0.707223, 0.578729, 0.703617), "std": (0.211883, 0.230117, 0.177517)}

# Shapes of the published checkpoints, from the model cards' configurations: (key, shape).
PUBLISHED = {
    "uni": [
        ("pos_embed", (1, 197, 1024)),
        ("patch_embed.proj.weight", (1024, 3, 16, 16)),
        ("blocks.23.ls1.gamma", (1024,)),
        ("blocks.23.mlp.fc1.weight", (4096, 1024)),
    ],
    "uni2-h": [
        ("reg_token", (1, 8, 1536)),
        ("pos_embed", (1, 256, 1536)),  # no_embed_class: patch positions only
        ("patch_embed.proj.weight", (1536, 3, 14, 14)),
        ("blocks.23.mlp.fc1.weight", (8192, 1536)),  # SwiGLU packed: 2 x 4096
        ("blocks.23.mlp.fc2.weight", (1536, 4096)),
    ],
    "virchow2": [
        ("reg_token", (1, 4, 1280)),
        ("blocks.31.mlp.fc1.weight", (6832, 1280)),
        ("blocks.31.mlp.fc2.weight", (1280, 3416)),
    ],
    "h-optimus-0": [
        ("reg_token", (1, 4, 1536)),
        ("pos_embed", (1, 256, 1536)),
        ("blocks.39.mlp.fc1.weight", (8192, 1536)),
    ],
    "gigapath": [
        ("pos_embed", (1, 197, 1536)),
        ("patch_embed.proj.weight", (1536, 3, 16, 16)),
        ("blocks.39.mlp.fc2.weight", (1536, 4096)),
    ],
    "ctranspath": [
        ("patch_embed.proj.0.weight", (12, 3, 3, 3)),
        ("patch_embed.proj.3.weight", (24, 12, 3, 3)),
        ("patch_embed.proj.6.weight", (96, 24, 1, 1)),
        ("layers.3.blocks.1.mlp.fc2.weight", (768, 3072)),
        ("norm.weight", (768,)),
    ],
    "retccl": [("conv1.weight", (64, 3, 7, 7)), ("layer4.2.bn3.running_var", (2048,))],
}


def test_h_optimus_1_is_h_optimus_0_with_other_weights() -> None:
    """Same architecture and preprocessing on both model cards; only the weights (and licence) differ."""
    same = {"licence", "source"}
    assert named_recipe("h-optimus-1").model_dump(exclude=same) == named_recipe("h-optimus-0").model_dump(
        exclude=same
    )


@pytest.mark.parametrize(
    "name", [n for n in extractor_names() if n not in ("timm:<architecture>", "h-optimus-1")]
)
def test_full_size_architecture_matches_the_card(name: str) -> None:
    recipe = named_recipe(name)
    with torch.device("meta"):
        trunk = create_trunk(recipe, skip_init=True)
        out = pooled(recipe, trunk).eval()(torch.zeros(2, 3, recipe.input_px or 224, recipe.input_px or 224))
    state = trunk.state_dict()
    for key, shape in PUBLISHED[name]:
        assert tuple(state[key].shape) == shape, key
    params_m = sum(p.numel() for p in trunk.parameters()) / 1e6
    assert params_m == pytest.approx(recipe.params_m, rel=0.002)
    assert tuple(out.shape) == (2, recipe.feature_dim)
    assert recipe.source.startswith("https://") and recipe.mpp and recipe.licence


def test_published_dims() -> None:
    dims = {n: named_recipe(n).feature_dim for n in [*PUBLISHED, "h-optimus-1"]}
    assert dims == {
        "uni": 1024,
        "uni2-h": 1536,
        "virchow2": 2560,
        "h-optimus-0": 1536,
        "h-optimus-1": 1536,
        "gigapath": 1536,
        "ctranspath": 768,
        "retccl": 2048,
    }


# ------------------------------------------------------------------------ small real forwards


def _tile(px: int) -> Image.Image:
    """A real H&E region of CMU-1-Small-Region, `px` wide (not the model's input size: it is resized)."""
    import openslide

    with openslide.OpenSlide(str(CMU)) as slide:
        return slide.read_region((1026, 1026), 0, (px, px)).convert("RGB")


def _spec_file(tmp_path: Path, name: str, **kwargs: int) -> Path:
    """The registered recipe with a shallower network (same family code path), as an --extractor-spec."""
    recipe = named_recipe(name)
    spec = recipe.model_dump(mode="json")
    spec["kwargs"] = {**spec["kwargs"], **kwargs}
    spec["feature_dim"] = kwargs["embed_dim"] * (2 if recipe.pooling == "cls+mean" else 1)
    path = tmp_path / f"{name}-tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def _card_features(model: torch.nn.Module, preprocess: transforms.Compose, image: Image.Image, pool: str):
    with torch.inference_mode():
        tokens = model.eval()(preprocess(image)[None])
    if pool == "virchow2":  # the card: concat(class token, mean of output[:, 5:])
        return torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], dim=-1)
    return tokens


# Same family code path (patch embedding, registers, SwiGLU, layer scale, pooling), a fraction of the size.
TINY = {"depth": 1, "embed_dim": 96, "num_heads": 2}
CARDS = {
    # name: (timm architecture, card kwargs at depth 1, card transform, tile px fed, checkpoint file suffix)
    "uni": (
        "vit_large_patch16_224",
        {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": True},
        transforms.Compose([transforms.Resize(224), transforms.ToTensor(), transforms.Normalize(**IMAGENET)]),
        ".bin",
    ),
    "uni2-h": (
        "vit_giant_patch14_224",
        {
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "num_classes": 0,
            "no_embed_class": True,
            "mlp_layer": timm.layers.SwiGLUPacked,
            "act_layer": torch.nn.SiLU,
            "reg_tokens": 8,
            "dynamic_img_size": True,
        },
        transforms.Compose([transforms.Resize(224), transforms.ToTensor(), transforms.Normalize(**IMAGENET)]),
        ".safetensors",
    ),
    "virchow2": (
        "vit_huge_patch14_224",
        {
            "img_size": 224,
            "init_values": 1e-5,
            "num_classes": 0,
            "mlp_ratio": 5.3375,
            "reg_tokens": 4,
            "global_pool": "",
            "dynamic_img_size": True,
            "mlp_layer": timm.layers.SwiGLUPacked,
            "act_layer": torch.nn.SiLU,
        },
        transforms.Compose(
            [
                transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.ToTensor(),
                transforms.Normalize(**IMAGENET),
            ]
        ),
        ".bin",
    ),
    "h-optimus-0": (
        "vit_giant_patch14_reg4_dinov2",
        {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "global_pool": "token"},
        transforms.Compose([transforms.Resize(224), transforms.ToTensor(), transforms.Normalize(**HOPTIMUS)]),
        ".pth",
    ),
    "gigapath": (
        "vit_giant_patch14_dinov2",
        {
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "init_values": 1e-5,
            "mlp_ratio": 5.33334,
            "num_classes": 0,
        },
        transforms.Compose(
            [
                transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize(**IMAGENET),
            ]
        ),
        ".pt",
    ),
}


@pytest.mark.parametrize("name", list(CARDS))
def test_tiny_card_forward_equals_ours(tmp_path: Path, name: str) -> None:
    """Preprocessing (resize, crop, mean/std) and pooling (class token, registers skipped) as the card."""
    torch.set_num_threads(1)
    architecture, kwargs, preprocess, suffix = CARDS[name]
    torch.manual_seed(0)
    card = timm.create_model(architecture, pretrained=False, **{**kwargs, **TINY})
    weights = tmp_path / f"{name}{suffix}"
    state = {k: v.contiguous() for k, v in card.state_dict().items()}
    save_file(state, str(weights)) if suffix == ".safetensors" else torch.save(state, weights)
    image = _tile(300)  # a 300 px tile: every model resizes it
    expected = _card_features(card, preprocess, image, name)

    extractor = build_extractor(name, weights, False, spec_file=_spec_file(tmp_path, name, **TINY))
    tile = np.asarray(image)
    with torch.inference_mode():
        ours = extractor.spec.model.eval()(extractor.spec.transform(tile)[None])
    tiny_dim = 96 * (2 if name == "virchow2" else 1)
    assert ours.shape == expected.shape == (1, tiny_dim)
    # Bilinear: ours is PIL's box reduction + antialiased bilinear, torchvision's is PIL bilinear.
    assert _cosine(ours, expected).item() > 0.999


class _PaperConvStem(torch.nn.Module):
    """TransPath's ConvStem as its `ctran.py` writes it (tokens flattened to B, N, C, then normed), with
    the reshape to NHWC that timm >= 0.9 Swin needs; an implementation independent of ours."""

    def __init__(self, img_size=(224, 224), patch_size=4, in_chans=3, embed_dim=96, norm_layer=None, **_):
        super().__init__()
        self.img_size, self.patch_size = tuple(img_size), (patch_size, patch_size)
        self.grid_size = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        stem, dim_in, dim_out = [], in_chans, embed_dim // 8
        for _ in range(2):
            stem += [torch.nn.Conv2d(dim_in, dim_out, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(dim_out)]
            stem += [torch.nn.ReLU(inplace=True)]
            dim_in, dim_out = dim_out, dim_out * 2
        stem.append(torch.nn.Conv2d(dim_in, embed_dim, kernel_size=1))
        self.proj = torch.nn.Sequential(*stem)
        self.norm = norm_layer(embed_dim) if norm_layer else torch.nn.Identity()

    def forward(self, x):
        y = self.proj(x)
        b, c, h, w = y.shape
        return self.norm(y.flatten(2).transpose(1, 2)).reshape(b, h, w, c)


def _old_swin_layout(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """timm 0.5 (TransPath's `timm_ctp`) layout: downsample at the end of stage i (not the start of i + 1),
    relative_position_index and attn_mask saved as buffers, all under {'model': ...}."""
    import re

    old = {
        re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", k): v
        for k, v in state.items()
    }
    for name, module in model.named_modules():
        if hasattr(module, "relative_position_index"):
            old[f"{name}.relative_position_index"] = module.relative_position_index.clone()
        if getattr(module, "attn_mask", None) is not None:
            old[f"{name}.attn_mask"] = module.attn_mask.clone()
    return old


def test_ctranspath_loads_its_published_layout_and_matches_the_paper_stem(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    card = timm.create_model("swin_tiny_patch4_window7_224", embed_layer=_PaperConvStem, num_classes=0)
    for module in card.modules():  # non-trivial BatchNorm statistics, so eval-mode BN is exercised
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    weights = tmp_path / "ctranspath.pth"
    torch.save({"model": _old_swin_layout(card.state_dict(), card)}, weights)
    extractor = build_extractor("ctranspath", weights, random_init=False)
    assert isinstance(extractor.spec.model.patch_embed, ConvStem)
    image = _tile(224)
    preprocess = transforms.Compose(
        [transforms.Resize(224), transforms.ToTensor(), transforms.Normalize(**IMAGENET)]
    )
    with torch.inference_mode():
        expected = card.eval()(preprocess(image)[None])
        ours = extractor.spec.model.eval()(extractor.spec.transform(np.asarray(image))[None])
    assert ours.shape == (1, 768)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_a_checkpoint_of_another_model_names_its_first_wrong_keys(tmp_path: Path) -> None:
    """UNI weights offered as UNI2-h (tiny): strict check, one line with missing, unexpected, mis-shaped."""
    _, kwargs, _, _ = CARDS["uni"]
    state = timm.create_model("vit_large_patch16_224", **{**kwargs, **TINY}).state_dict()
    weights = tmp_path / "uni.bin"
    torch.save(state, weights)
    with pytest.raises(WsiError) as error:
        build_extractor("uni2-h", weights, False, spec_file=_spec_file(tmp_path, "uni2-h", **TINY))
    message = str(error.value)
    assert "\n" not in message and "uni2-h-tiny" in message and "missing 1 keys: reg_token" in message
    assert "patch_embed.proj.weight (96, 3, 16, 16) != (96, 3, 14, 14)" in message


def test_list_models_prints_the_table_without_torch() -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    probe = (
        "import sys; from typer.testing import CliRunner; from tests.extract.cli_app import app; "
        "r = CliRunner().invoke(app, ['--list-models'], terminal_width=200); print(r.exit_code); print(r.output); "
        "print([m for m in ('torch', 'timm', 'tiatoolbox') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=repo)
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "0" and lines[-1] == "[]"
    table = "\n".join(lines)
    for name in ("uni2-h", "virchow2", "h-optimus-0", "gigapath", "ctranspath", "2560", "112 µm / 224 px"):
        assert name in table


def test_batch_size_auto_on_cpu_and_explicit() -> None:
    from wsi_pipeline.extract.engine import CPU_AUTO_BATCH, resolve_batch_size, resolve_runtime

    runtime = resolve_runtime("cpu", "auto", torch.bfloat16)
    assert runtime.autocast_dtype is None  # float32 on CPU, whatever the extractor prefers on CUDA
    model = torch.nn.Identity()
    assert resolve_batch_size("auto", model, runtime, 224) == CPU_AUTO_BATCH
    assert resolve_batch_size(7, model, runtime, 224) == 7
