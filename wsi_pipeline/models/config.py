"""Hyperparameters of each aggregator, with the papers' values as defaults.

These classes are the single source of the defaults (`wsi models` prints them), and
`build_model(name, ..., **overrides)` validates overrides against them. `extra="forbid"`
turns a typo such as `depht: 4` into a one-line error naming the key instead of a silently ignored value.
"""

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

# How a model turns one forward pass into per-tile scores for heatmaps (`MILModel.tile_scores`). The one
# list of names: here, torch-free, so `wsi eval --help` and `EvalConfig` need no torch import.
ScoreMethod = Literal[
    "attention",
    "relevance",
    "layer_relevance",
    "gradient_input",
    "integrated_gradients",
    "occlusion",
    "conservative",
    "projected_gradient",
    "evidence_profile",
]
SCORE_METHODS: tuple[str, ...] = get_args(ScoreMethod)


class ModelConfig(BaseModel):
    """Base of all model configs: frozen so a built model's `config` is a faithful record of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ViTConfig(ModelConfig):
    """ViT-WSI (Khader et al. 2024, Table 1; the Kather lab's MIL transformer): 2 pre-LN blocks of 8x64 heads."""

    dim: int = Field(512, gt=0, description="token width after Linear(in_dim -> dim) + ReLU")
    depth: int = Field(2, gt=0, description="number of pre-LayerNorm transformer blocks")
    heads: int = Field(8, gt=0)
    dim_head: int = Field(64, gt=0)
    mlp_dim: int = Field(512, gt=0, description="hidden width of the GELU MLP in each block")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="after the embedding, attention and MLP")


class SequenceNormViTConfig(ViTConfig):
    """`vit_sf` and `vit_sf_ca`: the sequence norm's epsilon is part of the method (paper: 1e-5)."""

    eps: float = Field(1e-5, gt=0.0, description="added to the per-channel token variance")


class SimAViTConfig(ViTConfig):
    """`vit_sima`: epsilon guards the L1 norm of a channel that is zero on every token."""

    eps: float = Field(1e-6, gt=0.0)


class ABMILConfig(ModelConfig):
    """Gated attention MIL (Ilse et al. 2018): embedding M=500, attention hidden L=128. `hidden_dims` stacks
    layers before the embedding: (256, 128) with M=64 is the embedding network of the paper's experiments on
    the classic MIL sets (measured in benchmarks/RESULTS.md, "Deeper network, longer schedule"; not the default).
    On 2,048-d tile features train it with `l2` 1e-3: 1e-2 held its logits near zero ("Why the deeper network
    misplaced its threshold")."""

    hidden_dims: tuple[PositiveInt, ...] = Field(
        (), description="widths of Linear + ReLU layers before the embedding (each followed by dropout)"
    )
    embed_dim: int = Field(500, gt=0, description="M: width of the tile embedding")
    attention_dim: int = Field(128, gt=0, description="L: hidden width of the gated attention network")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="after the embedding and each hidden layer")


class TransMILConfig(ModelConfig):
    """TransMIL (Shao et al. 2021): two Nystrom-attention layers around a PPEG, 512 wide, 8 heads."""

    dim: int = Field(512, gt=0)
    heads: int = Field(8, gt=0)
    dim_head: int = Field(64, gt=0)
    landmarks: int = Field(256, gt=0, description="m: Nystrom landmarks (segment means), dim / 2")
    pinv_iterations: int = Field(6, gt=0, description="iterations of the Moore-Penrose approximation")
    residual_kernel: int = Field(33, ge=0, description="depthwise conv skip on V over the sequence; 0 = off")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="after each attention output projection")

    @field_validator("residual_kernel")
    @classmethod
    def _odd_kernel(cls, value: int) -> int:
        # An even kernel would shift every token's conv window by one position.
        if value and value % 2 == 0:
            raise ValueError("must be odd (or 0 to disable)")
        return value


class MeanLinearConfig(ModelConfig):
    """`mean_linear`: the mean of the (standardised) tile features into one linear layer, the baseline every
    aggregator has to beat (benchmarks/bench_real.py)."""

    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="on the mean-pooled features")


class MeanMaxMLPConfig(ModelConfig):
    """`meanmax_mlp`: tiles embedded by Linear + ReLU, mean- and max-pooled, concatenated, standardised with
    running statistics of the training bags, then linear."""

    embed_dim: int = Field(128, gt=0, description="width of the tile embedding that is mean- and max-pooled")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="after the embedding")
