"""Weights: strict layout checks, safe loading, and the explicit random init."""

import builtins
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.extract.helpers import torchvision_resnet50_state
from wsi_pipeline.errors import WsiError
from wsi_pipeline.extract.recipes import register_extractor
from wsi_pipeline.extract.registry import RANDOM_INIT, build_extractor, state_sha256
from wsi_pipeline.extract.weights import sha256_file


def _trunk_equals(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    loaded = model.state_dict()
    return all(torch.equal(loaded[k], v) for k, v in state.items())


def test_retccl_accepts_the_torchvision_layout(retccl_weights: Path) -> None:
    extractor = build_extractor("retccl", retccl_weights, random_init=False)
    assert extractor.feature_dim == 2048 and extractor.spec.input_px is None  # any size: fully convolutional
    assert extractor.weights_sha256 == sha256_file(retccl_weights)
    assert _trunk_equals(extractor.spec.model, torch.load(retccl_weights, weights_only=True))


def test_retccl_tolerates_module_prefix_and_stray_fc(tmp_path: Path) -> None:
    state = torchvision_resnet50_state(seed=1)
    wrapped = {f"module.{k}": v for k, v in state.items()}
    wrapped["module.fc.weight"] = torch.zeros(1000, 2048)
    wrapped["module.fc.bias"] = torch.zeros(1000)
    path = tmp_path / "data_parallel.pth"
    torch.save({"state_dict": wrapped}, path)
    extractor = build_extractor("retccl", path, random_init=False)
    assert _trunk_equals(extractor.spec.model, state)


def test_retccl_rejects_another_layout_listing_keys(tmp_path: Path) -> None:
    state = torchvision_resnet50_state()
    del state["layer4.2.bn3.running_var"]
    state["projector.0.weight"] = torch.zeros(4, 4)
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(WsiError) as error:
        build_extractor("retccl", path, random_init=False)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    assert "retccl checkpoint" in message and "missing 1 keys: layer4.2.bn3.running_var" in message
    assert "unexpected 1 keys: projector.0.weight" in message
    assert "conv1.weight (64, 3, 3, 3) != (64, 3, 7, 7)" in message


class _Payload:
    """Unpickling this runs `open(marker, "w")`: code execution that weights_only must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return builtins.open, (str(self.marker), "w")


def test_pickle_payload_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Payload(marker)}, path)
    with pytest.raises(WsiError) as error:
        build_extractor("retccl", path, random_init=False)
    message = str(error.value)
    assert "refused" in message and "pickled code" in message and "\n" not in message
    assert not marker.exists()


def test_truncated_checkpoint_is_one_line_error(tmp_path: Path, retccl_weights: Path) -> None:
    path = tmp_path / "truncated.pth"
    path.write_bytes(retccl_weights.read_bytes()[:100_000])
    with pytest.raises(WsiError, match="not a readable torch checkpoint") as error:
        build_extractor("retccl", path, random_init=False)
    assert "\n" not in str(error.value)


def test_weights_required_unless_random_init(tmp_path: Path, retccl_weights: Path) -> None:
    with pytest.raises(WsiError, match="--random-init"):
        build_extractor("retccl", None, random_init=False)
    with pytest.raises(WsiError, match="exclude each other"):
        build_extractor("retccl", retccl_weights, random_init=True)


def test_random_init_is_seeded_and_fingerprinted_by_its_weights() -> None:
    """Two --random-init runs encode with the same network (a resumed run cannot mix two), the bags name
    that network by its digest, and the caller's random stream is left alone."""
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = build_extractor("retccl", None, random_init=True)
    assert torch.equal(torch.rand(3), expected_next)
    second = build_extractor("retccl", None, random_init=True)
    assert first.weights_sha256 == second.weights_sha256
    assert first.weights_sha256.startswith(f"{RANDOM_INIT}:") and len(first.weights_sha256) == 12 + 64
    for a, b in zip(
        first.spec.model.state_dict().values(), second.spec.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    # The digest follows the weights: one changed value is another fingerprint.
    with torch.no_grad():
        next(second.spec.model.parameters()).view(-1)[0] += 1
    assert state_sha256(second.spec.model) != state_sha256(first.spec.model)


def test_timm_extractor_from_safetensors(tmp_path: Path) -> None:
    import timm

    source = timm.create_model("resnet18", pretrained=False)  # with its classifier, as checkpoints are saved
    path = tmp_path / "resnet18.safetensors"
    save_file(source.state_dict(), str(path))
    extractor = build_extractor("timm:resnet18", path, random_init=False)
    assert extractor.name == "timm:resnet18" and extractor.feature_dim == 512
    trunk = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    assert _trunk_equals(extractor.spec.model, trunk)


def test_unknown_names_are_one_line_errors() -> None:
    with pytest.raises(
        WsiError, match=r"unknown extractor 'retcl'.*retccl, uni, uni2-h, virchow2, timm:<architecture>"
    ):
        build_extractor("retcl", None, random_init=True)
    with pytest.raises(WsiError, match="timm has no architecture 'resnet_5O'"):
        build_extractor("timm:resnet_5O", None, random_init=True)


def test_registering_an_extractor_is_one_function() -> None:
    """A decorated function returning its recipe; the name is listed, built, and cannot be taken twice."""
    from wsi_pipeline.extract.catalog import extractor_names
    from wsi_pipeline.extract.recipes import EXTRACTORS, ExtractorRecipe

    @register_extractor("test-resnet18")
    def resnet18() -> ExtractorRecipe:
        return ExtractorRecipe(
            architecture="resnet18",
            input_px=64,
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
            pooling="model",
            feature_dim=512,
        )

    try:
        assert "test-resnet18" in extractor_names()
        extractor = build_extractor("test-resnet18", None, random_init=True)
        assert extractor.feature_dim == 512 and extractor.spec.input_px == 64
        assert extractor.attrs()["extractor_spec"]["architecture"] == "resnet18"
        with pytest.raises(ValueError, match="already registered"):
            register_extractor("test-resnet18")(resnet18)
        with pytest.raises(ValueError, match="reserved"):
            register_extractor("timm:mine")
    finally:
        del EXTRACTORS._entries["test-resnet18"]
