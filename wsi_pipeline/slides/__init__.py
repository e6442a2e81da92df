"""Reading slides: one interface over OpenSlide and tiatoolbox, and the slide's resolution."""

from wsi_pipeline.slides.mpp import resolve_mpp
from wsi_pipeline.slides.reader import SlideReader, open_slide

__all__ = ["SlideReader", "open_slide", "resolve_mpp"]
