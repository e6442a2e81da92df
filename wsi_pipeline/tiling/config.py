"""Settings of `wsi tile`; the defaults are DESIGN §4 and equal `configs/tile.yaml` (a test keeps them so).

Every value that changes which tiles are kept is here, and is written into each tile store, so a store says
how it was made and a resumed run can refuse to mix stores made with different settings.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TissueMethod = Literal["otsu", "tiatoolbox"]


class TileConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tile_um: float = Field(256.0, gt=0, description="Side of a tile on the glass, in µm.")
    tile_px: int = Field(224, ge=8, le=4096, description="Side of a tile as the model sees it, in pixels.")
    mpp: float | None = Field(
        None, gt=0, description="µm per level-0 pixel, used only for slides whose files carry no resolution."
    )
    tissue_method: TissueMethod = Field(
        "otsu",
        description="otsu: Otsu threshold on the thumbnail's saturation; tiatoolbox: its MorphologicalMasker.",
    )
    min_tissue: float = Field(
        0.5, ge=0, le=1, description="Keep grid tiles whose tissue-mask fraction is at least this."
    )
    white_gray: int = Field(
        240, ge=0, le=255, description="A pixel is bright when its grayscale value is at least this."
    )
    max_white_fraction: float = Field(
        0.5,
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

    def thresholds(self) -> dict[str, float]:
        """The filter thresholds as written into each tile store."""
        return {
            "min_tissue": self.min_tissue,
            "white_gray": float(self.white_gray),
            "max_white_fraction": self.max_white_fraction,
            "min_edge_fraction": self.min_edge_fraction,
        }
