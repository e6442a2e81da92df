"""wsi: whole-slide images to slide-level diagnoses."""

__version__ = "0.1.0"
