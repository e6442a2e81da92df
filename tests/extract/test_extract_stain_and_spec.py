"""`wsi extract` end to end with a spec file, the geometry warning, and stain normalisation (tiatoolbox)."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from tests.extract.cli_app import app
from tests.extract.helpers import CMU, TISSUE_COORDS, make_store
from wsi_pipeline.extract.catalog import named_recipe
from wsi_pipeline.extract.stain import BUNDLED_TARGET, StainNormalizer
from wsi_pipeline.extract.weights import sha256_file
from wsi_pipeline.stores.feature_bag import load_bag, read_bag_attrs

pytestmark = pytest.mark.slow


def _extract(tiles: Path, out: Path, *options: str, workers: int = 0) -> str:
    args = [str(tiles), "--out", str(out), "--random-init", "--workers", str(workers), "--dtype", "float32"]
    args += options
    result = CliRunner().invoke(app, args, terminal_width=250)
    assert result.exit_code == 0, result.output
    return result.output


def test_spec_file_is_recorded_and_the_geometry_warned(tmp_path: Path) -> None:
    """A UNI-family spec (trained at 0.5 µm/px) on 256 µm / 224 px tiles (1.14 µm/px): one warning naming
    the --tile-um to use; the spec itself lands in the bag."""
    spec = named_recipe("uni").model_dump(mode="json")
    spec["kwargs"].update(depth=1, embed_dim=64, num_heads=2)
    spec["feature_dim"] = 64
    spec_file = tmp_path / "my-vit.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    make_store(tmp_path / "tiles", CMU, TISSUE_COORDS[:2])
    output = _extract(tmp_path / "tiles", tmp_path / "features", "--extractor-spec", str(spec_file))
    assert output.count("warning:") == 1 and "--tile-um 112 --tile-px 224" in output
    bag = load_bag(tmp_path / "features" / f"{CMU.stem}.h5")
    assert bag.features.shape == (2, 64) and bag.meta["extractor"] == "spec:my-vit"
    assert json.loads(bag.meta["extractor_spec"]) == spec and bag.meta["stain_norm"] == "none"


def test_stain_normalisation_is_recorded_and_part_of_the_identity(tmp_path: Path) -> None:
    make_store(tmp_path / "tiles", CMU, TISSUE_COORDS[:3])
    model = ("--model", "timm:resnet18", "--batch-size", "2")
    # Normalised in a DataLoader worker: the fitted normaliser travels there with the transform.
    _extract(tmp_path / "tiles", tmp_path / "stained", *model, "--stain-norm", "macenko", workers=1)
    _extract(tmp_path / "tiles", tmp_path / "plain", *model)
    stained, plain = (tmp_path / out / f"{CMU.stem}.h5" for out in ("stained", "plain"))
    attrs, plain_attrs = read_bag_attrs(stained), read_bag_attrs(plain)
    assert not np.allclose(load_bag(stained).features, load_bag(plain).features, atol=1e-3)
    assert (attrs["stain_norm"], attrs["stain_target"]) == ("macenko", "bundled:stain_target.png")
    assert attrs["stain_target_sha256"] == sha256_file(BUNDLED_TARGET)
    assert (
        attrs["extractor_sha256"] != plain_attrs["extractor_sha256"] and plain_attrs["stain_norm"] == "none"
    )
    # Resuming into the plain bags with stain normalisation on would mix two recipes: refused, one line.
    args = [str(tmp_path / "tiles"), "--out", str(tmp_path / "plain"), "--random-init", *model]
    result = CliRunner().invoke(app, [*args, "--stain-norm", "macenko"])
    assert result.exit_code == 1 and "extractor_sha256" in result.output and "--overwrite" in result.output


def test_stain_normaliser_is_deterministic_and_passes_blank_tiles(tmp_path: Path) -> None:
    """The same tile gives the same pixels, in this process or in a worker that unpickled the normaliser."""
    import pickle

    import openslide

    with openslide.OpenSlide(str(CMU)) as slide:
        tile = np.array(slide.read_region((513, 2052), 0, (224, 224)).convert("RGB"))
    for method in ("reinhard", "macenko", "vahadane"):
        normalizer = StainNormalizer(method, None)
        out = normalizer(tile)
        assert out.dtype == np.uint8 and out.shape == tile.shape and not np.array_equal(out, tile), method
        np.testing.assert_array_equal(normalizer(tile), out)
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(normalizer))(tile), out)
    blank = np.full((224, 224, 3), 255, np.uint8)
    np.testing.assert_array_equal(StainNormalizer("macenko", None)(blank), blank)
    with pytest.raises(Exception, match="not a readable image"):
        StainNormalizer("macenko", tmp_path / "missing.png")
