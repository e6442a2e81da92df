"""Settings of `wsi demo`: how big the demo cohort is and how long the aggregator trains.

The defaults are sized for the issue's budget (the whole `make demo` in <= 10 minutes on 2 CPU cores, set-up
included): 32 crops of 3 x 3 tiles, about 200 tiles once the tissue filter has run, which a random-init
ResNet-50 encodes in well under a minute on one core (benchmarks/RESULTS.md, "Extraction"). Every stage
otherwise runs with its own defaults, so the demo exercises the settings a user gets. The command exposes none of
these; tests use a smaller cohort through the library.
"""

from pydantic import BaseModel, ConfigDict, Field

# The trainer's default split (0.60/0.14/0.26 of patients, stratified) needs 6 patients per class before its
# validation set can hold both classes.
MIN_PER_CLASS = 6


class DemoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n_per_class: int = Field(
        16, ge=MIN_PER_CLASS, description="crops (demo slides) cut from each of the two real slides"
    )
    tiles_per_side: int = Field(
        3, ge=1, le=4, description="crop side in tiles of the tile stage's tile_um (3: at most 9 tiles)"
    )
    min_crop_tissue: float = Field(0.5, gt=0, le=1, description="tissue share a crop position needs")
    mpp_without_metadata: float = Field(
        0.5,
        gt=0,
        description="µm/px of a source slide without resolution (the TCGA one), written into its crops",
    )
    seed: int = Field(
        0, description="crop positions and turns, random-init extractor weights, split, training"
    )
    model: str = Field("vit_sf", description="aggregator (wsi train --model)")
    epochs: int = Field(10, ge=1, description="training epochs (wsi train --epochs)")
    torch_threads: int = Field(
        1,
        ge=1,
        description=(
            "intra-op threads while the demo runs: its bags of a few tiles gain nothing from more, and on a "
            "busy machine threads waiting for each other made training 8x and extraction 3x slower"
        ),
    )
