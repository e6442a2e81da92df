"""configs/tcga_nsclc.yaml, the preset the README runs the paper with: it must resolve through `wsi train`'s
own config path, and its split must give the paper's 627 / 145 / 270 slides on a cohort of the paper's size."""

from collections import Counter
from pathlib import Path

from wsi_pipeline.config import load_config
from wsi_pipeline.stores.labels import read_label_table
from wsi_pipeline.train.config import TrainConfig, resolve_train_config
from wsi_pipeline.train.splits import make_splits

PRESET = Path(__file__).resolve().parents[1] / "configs" / "tcga_nsclc.yaml"
PAPER_SPLIT = {"train": 627, "val": 145, "test": 270}  # Khader et al. 2024, TCGA-NSCLC


def test_readme_command_resolves_the_preset_with_options_winning(tmp_path: Path) -> None:
    """`wsi train --config configs/tcga_nsclc.yaml --features ... --labels ... --out ...` (README)."""
    overrides = {"features": tmp_path / "features", "labels": tmp_path / "labels.csv"}
    cfg = resolve_train_config(PRESET, overrides, tmp_path / "runs" / "nsclc", resume=False)
    assert cfg.features == tmp_path / "features" and cfg.labels == tmp_path / "labels.csv"
    assert cfg.classes == ["LUAD", "LUSC"]  # LUSC at index 1: the positive class of the binary AUROC
    assert cfg.max_tiles is None  # whole bags at batch size 1, as the README says


def test_preset_split_gives_the_papers_slide_counts(tmp_path: Path) -> None:
    """1042 TCGA slides, one per patient, split by the preset's fractions and seed (within 2 slides)."""
    cfg = load_config(TrainConfig, PRESET)
    n_luad, n_lusc = 530, 512  # the paper's 1042 slides; the class shares only affect rounding
    rows = [
        f"TCGA-{i // 10000:02d}-{i % 10000:04d}-01Z-00-DX1,{'LUAD' if i < n_luad else 'LUSC'}"
        for i in range(n_luad + n_lusc)
    ]
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,label\n" + "\n".join(rows) + "\n")
    table = read_label_table(labels, cfg.classes)
    counts = Counter(r.split for r in make_splits(table, cfg.folds, cfg.split_fractions, cfg.seed))
    assert cfg.folds == 1
    for split, expected in PAPER_SPLIT.items():
        assert abs(counts[split] - expected) <= 2, (split, counts)
