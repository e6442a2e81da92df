"""Where a slide's resolution (µm per level-0 pixel) came from.

Named here, below both `slides/` (which finds the resolution) and `stores/` (which records it in every tile
store and bag), so neither imports the other. `fallback` is the user's `--mpp`, used only when the file
records neither its mpp nor its objective power.
"""

from typing import Literal

# `mpp-override`: the user's `--mpp` with `--mpp-override`, which replaces what the file records.
MppSource = Literal["metadata", "objective-power", "fallback", "mpp-override"]
