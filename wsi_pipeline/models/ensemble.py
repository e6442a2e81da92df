"""A fold's members predicting as one model (`wsi train --members K`): the mean of their probabilities.

Each member is a whole aggregator of one architecture, trained and calibrated on its own part of the fold's
training slides (wsi_pipeline/train/members.py). `MemberEnsemble` answers what eval, predict and the heatmaps
ask of a model (`forward`, `tile_scores`, `default_score_method`), so nothing downstream needs to know that
a fold holds several.
"""

import math

import torch
from torch import Tensor, nn


class MemberEnsemble(nn.Module):
    """Members of one architecture; logits are the log of their mean (calibrated) probabilities."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.default_score_method: str = members[0].default_score_method

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, N, D) -> (B, n_classes) log mean probability. A softmax of it is the members' mean
        probability (what eval and predict report); each member's temperature is already in its logits."""
        logp = torch.stack([torch.log_softmax(m(x, mask).float(), dim=-1) for m in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))

    def tile_scores(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        method: str | None = None,
        *,
        target: int | None = None,
    ) -> Tensor:
        """(B, N) float32: the mean of the members' scores, every member explaining the same class, `target`
        or else the ensemble's predicted class of each bag (not each member's own, which may differ)."""
        if target is None:
            with torch.no_grad():
                predicted = self(x, mask).argmax(dim=-1).tolist()
            rows = [
                self.tile_scores(x[b : b + 1], _row(mask, b), method, target=t)
                for b, t in enumerate(predicted)
            ]
            return torch.cat(rows)
        total = torch.zeros(x.shape[:2], dtype=torch.float32, device=x.device)
        for member in self.members:
            total += member.tile_scores(x, mask, method, target=target).float()
        return total / len(self.members)


def _row(mask: Tensor | None, b: int) -> Tensor | None:
    return None if mask is None else mask[b : b + 1]


def members_of(model: nn.Module) -> list[nn.Module]:
    """The single models inside `model`: its members, or itself."""
    return list(model.members) if isinstance(model, MemberEnsemble) else [model]
