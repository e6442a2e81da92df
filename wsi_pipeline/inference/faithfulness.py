"""Does a heatmap explain the prediction? The deletion test, which needs no ground truth.

Remove the `fraction` of tiles a heatmap scores highest and re-run the model: if the map points at the
evidence, the predicted class's probability drops much more than when the same number of tiles is removed
at random. `wsi eval` and `wsi predict` report both drops per slide (two extra forwards), so a user sees on
their own slides whether the map can be trusted. `insertion` is the counterpart the benchmark also reports:
the probability with *only* those tiles kept.

A drop near the random drop means the map ranks tiles no better than chance for this model, or the
evidence is spread over more tiles than `fraction` (removing 10% of redundant evidence changes nothing):
benchmarks/bench_heatmaps.py measures both on planted signals.
"""

import csv
import io
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from wsi_pipeline.models import MILModel
from wsi_pipeline.stores.atomic import write_text_atomic

DELETION_FRACTION = 0.1
# (1, n, D) bag -> (n_classes,) probabilities: one model, or the mean of the folds that scored a slide.
Predict = Callable[[Tensor], Tensor]
DELETION_COLUMNS = ("deletion_drop_top10", "deletion_drop_random10")


@dataclass(frozen=True)
class DeletionTest:
    """Probabilities of the class predicted on the whole bag."""

    predicted: int  # the class whose probability is followed (the predicted one unless told otherwise)
    prob: float  # whole bag
    without_top: float  # the top `fraction` of tiles by score removed
    without_random: float  # as many tiles removed at random (seeded)

    @property
    def top_drop(self) -> float:
        return self.prob - self.without_top

    @property
    def random_drop(self) -> float:
        return self.prob - self.without_random


def model_probabilities(model: MILModel) -> Predict:
    """`Predict` of one model in its current mode (call `.eval()` first)."""

    @torch.no_grad()
    def predict(x: Tensor) -> Tensor:
        return model(x).float().softmax(dim=-1)[0]

    return predict


def tile_subsets(scores: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(N,) bool masks of the top `fraction` of tiles by score and of as many random tiles (at least one
    each, never all: a bag needs a tile left)."""
    n = scores.shape[0]
    k = min(max(1, round(fraction * n)), n - 1)
    top = torch.zeros(n, dtype=torch.bool, device=scores.device)
    top[torch.topk(scores.float(), k).indices] = True
    gen = torch.Generator().manual_seed(seed)
    random = torch.zeros(n, dtype=torch.bool, device=scores.device)
    random[torch.randperm(n, generator=gen)[:k].to(scores.device)] = True
    return top, random


def deletion_test(
    predict: Predict,
    x: Tensor,
    scores: Tensor,
    fraction: float = DELETION_FRACTION,
    seed: int = 0,
    whole: Tensor | None = None,
    target: int | None = None,
) -> DeletionTest:
    """The deletion test of one bag x (1, N, D) with tile scores (N,) for class `target` (default: the
    predicted one, which the scores must then explain): two forwards (top removed, random removed), plus one
    for the whole bag unless its probabilities come as `whole`. Needs 2+ tiles."""
    if x.shape[1] < 2:
        raise ValueError("the deletion test needs a bag of at least 2 tiles")
    probs = predict(x) if whole is None else torch.as_tensor(whole)
    predicted = int(probs.argmax()) if target is None else target
    top, random = tile_subsets(scores.to(x.device), fraction, seed)
    return DeletionTest(
        predicted=predicted,
        prob=float(probs[predicted]),
        without_top=float(predict(x[:, ~top])[predicted]),
        without_random=float(predict(x[:, ~random])[predicted]),
    )


def caption(test: DeletionTest) -> str:
    """One line under a heatmap's title: the deletion test of that map, in words."""
    return (
        f"removing its top {DELETION_FRACTION:.0%} of tiles lowers p by {test.top_drop:.2f} "
        f"({DELETION_FRACTION:.0%} at random: {test.random_drop:.2f})"
    )


def insertion_test(
    predict: Predict,
    x: Tensor,
    scores: Tensor,
    target: int,
    fraction: float = DELETION_FRACTION,
    seed: int = 0,
) -> tuple[float, float]:
    """P(target) with only the top `fraction` of tiles by score kept, and with as many random tiles kept."""
    top, random = tile_subsets(scores.to(x.device), fraction, seed)
    return float(predict(x[:, top])[target]), float(predict(x[:, random])[target])


def summary(tests: dict[str, DeletionTest]) -> dict[str, float | int | str]:
    """For metrics.json: the mean drops over the slides that had a heatmap."""
    if not tests:
        return {"n_slides": 0, "note": "no heatmap was made, so no deletion test ran"}
    top = statistics.fmean(t.top_drop for t in tests.values())
    random = statistics.fmean(t.random_drop for t in tests.values())
    return {
        "n_slides": len(tests),
        "fraction_removed": DELETION_FRACTION,
        "mean_drop_top": round(top, 6),
        "mean_drop_random": round(random, 6),
        "meaning": "drop of the predicted class's probability when the heatmap's top 10% of tiles are "
        "removed, against 10% removed at random; a faithful map drops much more than random",
    }


def annotate_predictions(path: Path, tests: dict[str, DeletionTest]) -> None:
    """Add the per-slide drops to a predictions.csv (empty for slides without a heatmap)."""
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*rows[0], *DELETION_COLUMNS])
    for row in rows[1:]:
        test = tests.get(row[0])
        writer.writerow([*row, *((f"{test.top_drop:.6f}", f"{test.random_drop:.6f}") if test else ("", ""))])
    write_text_atomic(path, buffer.getvalue())
