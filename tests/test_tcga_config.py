"""configs/tcga_nsclc.yaml is what README tells users to run the paper with: it must stay a valid run config."""

from pathlib import Path

from wsi_pipeline.config import load_config
from wsi_pipeline.train.config import TrainConfig

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tcga_nsclc.yaml"


def test_tcga_nsclc_config_is_the_papers_run() -> None:
    cfg = load_config(TrainConfig, CONFIG)
    assert cfg.model == "vit_sf"
    assert cfg.classes == ["LUAD", "LUSC"]
    assert cfg.max_tiles is None  # whole bags
    assert cfg.epochs == 100
    assert (cfg.split_fractions.train, cfg.split_fractions.val, cfg.split_fractions.test) == (0.6, 0.14, 0.26)
