"""Finding the slide a tile store was made from, also after the slides were moved.

A store records the slide's path, size and mtime at tiling time. `--slides-root DIR` looks the slide up by
file name anywhere under DIR (one walk per run). A file of another size is not the slide the tiles were
chosen on, so it is refused rather than read at coordinates that mean nothing there.
"""

import os
from pathlib import Path

from wsi_pipeline.errors import SlideError, WsiError
from wsi_pipeline.stores.tile_store import TileStoreMeta


class SlideLocator:
    def __init__(self, slides_root: Path | None) -> None:
        if slides_root is not None and not slides_root.is_dir():
            raise WsiError(f"--slides-root {slides_root}: no such folder")
        self.slides_root = slides_root
        self._by_name: dict[str, list[Path]] | None = None

    def find(self, meta: TileStoreMeta) -> Path:
        recorded = Path(meta.slide_path)
        if self.slides_root is not None:
            candidates = self._index().get(recorded.name, [])
            same_size = [p for p in candidates if _size(p) == meta.slide_bytes]
            if same_size:
                return same_size[0]
            if candidates:
                raise SlideError(
                    f"{meta.slide_id}: {candidates[0]} has {_size(candidates[0])} bytes, but the "
                    f"slide had {meta.slide_bytes} when tiled; re-run wsi tile on it"
                )
        if recorded.is_file():
            if _size(recorded) != meta.slide_bytes:
                raise SlideError(
                    f"{meta.slide_id}: {recorded} changed since tiling ({_size(recorded)} bytes now, "
                    f"{meta.slide_bytes} when tiled); re-run wsi tile on it"
                )
            return recorded
        if self.slides_root is None:
            raise SlideError(
                f"{meta.slide_id}: slide not found at {recorded} (moved since tiling?); "
                "pass --slides-root DIR to find it by file name"
            )
        raise SlideError(
            f"{meta.slide_id}: slide not found at {recorded} nor as {recorded.name} "
            f"under --slides-root {self.slides_root}"
        )

    def _index(self) -> dict[str, list[Path]]:
        if self._by_name is None:
            self._by_name = {}
            for folder, _, files in os.walk(self.slides_root):
                for name in sorted(files):
                    self._by_name.setdefault(name, []).append(Path(folder) / name)
        return self._by_name


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1
