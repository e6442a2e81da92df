"""What makes a heatmap readable: signed scores centred on 0, untiled tissue unlike a score of 0, strips of
positive evidence titled with the real count, one colour scale over a cohort on request."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from wsi_pipeline.evaluate import EvalConfig, run_evaluation
from wsi_pipeline.inference import heatmaps as hm
from wsi_pipeline.models import SCORE_METHODS

SLIDES = Path(__file__).resolve().parents[1] / "data" / "slides"


def test_signed_methods_get_a_diverging_scale_centred_on_zero() -> None:
    scores = np.array([-0.5, 0.1, 2.0, np.nan])
    for method in SCORE_METHODS:
        low, high, cmap = hm.score_range(scores, method)
        if method in hm.UNSIGNED_METHODS:
            assert cmap != "RdBu_r" and low < high
        else:
            assert cmap == "RdBu_r" and low == -high > -2.0
    assert hm.score_range(scores, "relevance", bound=7.0)[:2] == (-7.0, 7.0)


def test_untiled_tissue_is_drawn_unlike_a_tile_that_scored_zero() -> None:
    pink = np.zeros((4, 4, 3), np.uint8) + np.array([230, 150, 200], np.uint8)
    canvas = hm.Canvas(pink, 1.0, "thumbnail")
    raster = np.full((4, 4), np.nan, np.float32)
    raster[:2] = 0.0
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    colours = colormaps["RdBu_r"](Normalize(-1, 1)(np.nan_to_num(raster)), bytes=True)[..., :3]
    image = hm.blend(canvas, raster, colours.astype(np.float32), 0.5).astype(int)
    zero, untiled = image[:2], image[2:]
    assert zero.std(axis=(0, 1)).max() == 0 and untiled.std() > 10  # untiled: hatched; zero tiles: plain
    assert np.abs(zero.mean() - untiled.mean()) > 20
    # The slide is drawn in grey: no map colour can be mistaken for eosin.
    assert (untiled[..., 0] == untiled[..., 1]).all()


def test_strip_shows_only_positive_evidence_and_says_how_many(tmp_path: Path) -> None:
    scores = np.array([-1.0, 0.5, -0.2, 2.0, 0.0])
    assert hm.top_tiles(scores, 8).tolist() == [3, 1]
    assert hm.top_tiles(scores, 1).tolist() == [3]
    coords = np.array([[0, 0], [512, 512], [1024, 1024], [1536, 512], [0, 512]])
    slide = SLIDES / "CMU-1-Small-Region.svs"
    png = tmp_path / "strip.png"
    assert hm.save_top_tiles(png, slide, coords, 512, scores, k=8, tile_px=32, title="s") == 2
    assert png.is_file()
    assert hm.save_top_tiles(tmp_path / "none.png", slide, coords, 512, -np.abs(scores) - 1, 8, 32, "s") == 0
    assert not (tmp_path / "none.png").exists()


def test_scale_bar_is_a_round_length_about_a_fifth_of_the_image() -> None:
    um, px = hm.scale_bar_um(1000, downsample=32.0, mpp_level0=0.5)  # 16 µm per canvas px
    assert um == 2000 and px == 125


def test_global_scale_draws_every_map_after_scoring(trained_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    result = run_evaluation(EvalConfig(top_k=0, heatmap_scale="global"), run)
    assert all(o.status == "done" for o in result.outcomes)
    pngs = sorted((result.out_dir / "heatmaps").glob("*.png"))
    assert len(pngs) == len(result.outcomes)
    with Image.open(pngs[0]) as image:
        assert image.format == "PNG"
    assert yaml.safe_load((result.out_dir / "config.yaml").read_text())["heatmap_scale"] == "global"


def test_held_maps_share_one_bound_and_a_failing_map_fails_its_slide_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from wsi_pipeline.batch import SlideOutcome
    from wsi_pipeline.inference import slide_heatmap

    bounds: list[float] = []

    def draw(folder: Path, slide_id: str, *args: object, bound: float, **kwargs: object) -> str:
        if slide_id == "broken":
            raise ValueError("no canvas")
        bounds.append(bound)
        return "slide not reachable: no top-k strip"

    monkeypatch.setattr(slide_heatmap, "write_slide_heatmap", draw)
    maps = slide_heatmap.CohortScaleMaps(tmp_path, "global")
    bag = SimpleNamespace(coords=np.zeros((2, 2)), meta={})
    for slide_id, scores in (("weak", [0.1, -0.2]), ("broken", [0.0, 0.3]), ("strong", [4.0, -1.0])):
        assert (
            maps.write_or_hold(
                slide_id, bag, None, slide_id, np.array(scores), explained_class="tumour", settings=None
            )
            == ""
        )  # held: drawing now would reach the stub below without a bound
    before = [
        SlideOutcome(s, "done", "an earlier note" if s == "weak" else "")
        for s in ("weak", "broken", "strong")
    ]
    after = {o.slide_id: o for o in maps.draw(before, lambda exc: f"{type(exc).__name__}: {exc}")}
    cohort = hm.score_bound(np.array([0.1, -0.2, 0.0, 0.3, 4.0, -1.0]))  # every held map's scores
    assert bounds == [cohort, cohort] and cohort > hm.score_bound(np.array([0.1, -0.2]))
    assert after["weak"].reason == "an earlier note; slide not reachable: no top-k strip"
    assert (after["broken"].status, after["broken"].reason) == ("failed", "heatmap: ValueError: no canvas")
    assert after["strong"].status == "done" and not maps.held
