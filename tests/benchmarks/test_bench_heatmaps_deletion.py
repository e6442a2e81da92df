"""bench_heatmaps' deletion figures on a bag whose evidence is spread over 30% of its tiles: removing the top
10% cannot move the prediction, removing the top k (k = the planted tiles) can, and only if the map found them."""

import sys
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_heatmaps


class MeanOfFirstFeature(nn.Module):
    """P(positive) rises with the share of tiles whose first feature is 1; its tile scores are that feature
    (`oracle`) or its negative (`inverted`), so one map finds the evidence and the other the opposite."""

    def forward(self, x: Tensor) -> Tensor:
        share = x[..., 0].mean(dim=1)
        return torch.stack([torch.zeros_like(share), 20 * share - 3], dim=-1)

    def tile_scores(self, x: Tensor, method: str, target: int) -> Tensor:
        return x[..., 0] if method == "oracle" else -x[..., 0]


def bag_with_planted_share(n: int, planted: int) -> bench_heatmaps.Bag:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=torch.Generator().manual_seed(1))[:planted]] = True
    x = torch.zeros(n, 4)
    x[mask, 0] = 1.0
    return bench_heatmaps.Bag(x=x, label=1, planted=mask)


def test_removing_the_planted_count_of_top_tiles_undoes_a_spread_prediction_ten_percent_does_not() -> None:
    rows = bench_heatmaps.measure_bag(
        MeanOfFirstFeature(), bag_with_planted_share(200, 60), ["oracle", "inverted"], torch.device("cpu")
    )
    oracle, inverted = rows["oracle"], rows["inverted"]
    assert oracle["topk"] == 1.0
    assert oracle["top_drop_k"] > 0.85  # all 60 evidence tiles gone: p(positive) from 0.95 to 0.05
    assert oracle["top_drop"] < 0.2  # 20 of 60 gone: the prediction barely moves
    assert abs(oracle["random_drop_k"]) < 0.3 and oracle["random_drop_k"] == inverted["random_drop_k"]
    assert inverted["top_drop_k"] < 0  # removing the tiles it ranks first only strengthens the evidence
