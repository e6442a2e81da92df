"""`wsi tile`: tissue and ink masks, a grid of `tile_um` squares at a fixed µm/px placed to cover the
tissue, white and blur (edge and focus) filters, tissue recall.

Entry points: `tile_slides` (a batch, with resume, workers, progress and summary) in `runner`, and
`tile_slide` (one slide, the unit of work of any backend) in `slide`. Imported lazily by the CLI.
"""
