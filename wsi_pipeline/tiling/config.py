"""Settings of `wsi tile`; the defaults are the Kather-lab/STAMP geometry and filters (README.md, `wsi tile`).

The filter thresholds were chosen on the bundled slides and labelled tiles (README.md, `wsi tile`, "How the
defaults were chosen"): tissue recall >= 0.8 on every bundled slide, every labelled non-tissue tile
rejected, copies blurred by 1-3 µm dropped.

Every value that changes which tiles are kept is here, and is written into each tile store, so a store says
how it was made and a resumed run can refuse to mix stores made with different settings.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TissueMethod = Literal["otsu", "tiatoolbox"]


class TileConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tile_um: float = Field(256.0, gt=0, description="Side of a tile on the glass, in µm.")
    tile_px: int = Field(224, ge=8, le=4096, description="Side of a tile as the model sees it, in pixels.")
    mpp: float | None = Field(
        None,
        gt=0,
        description=(
            "µm per level-0 pixel: a fallback for slides whose files record no resolution "
            "(with mpp_override, it replaces the file's)."
        ),
    )
    mpp_override: bool = Field(
        False, description="Use mpp even where the file records a resolution (a mis-calibrated scanner)."
    )
    tissue_method: TissueMethod = Field(
        "otsu",
        description="otsu: Otsu threshold on the thumbnail's saturation; tiatoolbox: its MorphologicalMasker.",
    )
    min_tissue: float = Field(
        0.2, ge=0, le=1, description="Read grid tiles whose tissue-mask fraction is at least this."
    )
    max_ink_fraction: float = Field(
        0.02, ge=0, le=1, description="Reject tiles whose marker-ink fraction is above this."
    )
    white_gray: int = Field(
        224, ge=0, le=255, description="A pixel is bright when its grayscale value is at least this."
    )
    max_white_fraction: float = Field(
        0.8,
        ge=0,
        le=1,
        description="A tile is background when more than this fraction of its pixels is bright.",
    )
    min_edge_fraction: float = Field(
        0.02,
        ge=0,
        le=1,
        description="A tile is blurry when fewer than this fraction of its pixels are Canny edges.",
    )
    min_focus: float = Field(
        4.0,
        ge=0,
        description="A tile is blurry when its focus score (Laplacian energy lost to a 1 µm blur) is below this.",
    )

    @model_validator(mode="after")
    def _override_needs_a_value(self) -> "TileConfig":
        if self.mpp_override and self.mpp is None:
            raise ValueError("mpp_override needs mpp (--mpp-override without --mpp)")
        return self

    def thresholds(self) -> dict[str, float]:
        """The filter thresholds as written into each tile store."""
        return {
            "min_tissue": self.min_tissue,
            "max_ink_fraction": self.max_ink_fraction,
            "white_gray": float(self.white_gray),
            "max_white_fraction": self.max_white_fraction,
            "min_edge_fraction": self.min_edge_fraction,
            "min_focus": self.min_focus,
        }
