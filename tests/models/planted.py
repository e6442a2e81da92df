"""Planted-signal bags and a small `vit_sf` trained on them, shared by the score-method tests."""

import torch
from torch import nn

from wsi_pipeline.models import MILModel, build_model

Bag = tuple[torch.Tensor, int, torch.Tensor]  # tiles (n, D), label, planted (n,) bool


def planted_bags(n_bags: int, n_tiles: int, dim: int, gen: torch.Generator) -> list[Bag]:
    """N(0, I) tiles; in every second bag 30 % of them shifted by 4 along the first axis (bench_heatmaps'
    isotropic generator)."""
    bags = []
    for i in range(n_bags):
        x, planted = torch.randn(n_tiles, dim, generator=gen), torch.zeros(n_tiles, dtype=torch.bool)
        if i % 2:
            planted[torch.randperm(n_tiles, generator=gen)[: n_tiles * 3 // 10]] = True
            x[planted, 0] += 4.0
        bags.append((x, i % 2, planted))
    return bags


def class_means(bags: list[Bag]) -> torch.Tensor:
    """(2, D) mean tile of each class's bags, as `wsi train` keeps it (`MILModel.class_means`)."""
    return torch.stack([torch.cat([x for x, label, _ in bags if label == c]).mean(dim=0) for c in (0, 1)])


def top_k_precision(scores: torch.Tensor, planted: torch.Tensor) -> float:
    return float(planted[scores.topk(int(planted.sum())).indices].float().mean())


def trained_vit_sf() -> tuple[MILModel, list[Bag]]:
    """A narrow `vit_sf` trained 6 epochs on 16 bags of 400 32-d tiles, standardised and with class means set
    as `wsi train` does; and 6 held-out bags (odd indices positive). It must classify them: the caller's
    scores have something to explain only then."""
    gen = torch.Generator().manual_seed(0)
    train, test = planted_bags(16, 400, 32, gen), planted_bags(6, 400, 32, gen)
    model = build_model("vit_sf", in_dim=32, n_classes=2, dim=32, heads=4, dim_head=8, mlp_dim=48)
    tiles = torch.cat([x for x, _, _ in train])
    model.set_feature_norm(tiles.mean(dim=0), tiles.std(dim=0))
    model.set_class_means(class_means(train))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(6):
        for x, label, _ in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[None]), torch.tensor([label])).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        probs = [float(model(x[None]).softmax(-1)[0, 1]) for x, _, _ in test]
    assert min(probs[1::2]) > max(probs[0::2]), probs
    return model, test


def top_k_of(model: MILModel, test: list[Bag], methods: tuple[str, ...]) -> dict[str, list[float]]:
    """Top-k precision of each method's scores (explaining the positive class) on the positive bags."""
    return {
        method: [
            top_k_precision(model.tile_scores(x[None], method=method, target=1)[0], planted)
            for x, label, planted in test
            if label == 1
        ]
        for method in methods
    }
