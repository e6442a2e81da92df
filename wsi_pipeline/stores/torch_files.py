"""Reading torch files from elsewhere: data, never code.

Extractor weights, training checkpoints and `.pt` feature bags all come through `load_torch_data`, so each
is loaded with `weights_only=True` and a refused pickle or a damaged file reads the same way: one line
naming the file.
"""

import pickle
import re
from pathlib import Path
from typing import Any

from wsi_pipeline.errors import WsiError


def load_torch_data(path: Path, *, kind: str, allowed: str) -> Any:
    """`torch.load(path, weights_only=True)` on CPU.

    `kind` names the file in the damaged-file error ("not a <kind>"); `allowed` tells the user, in the
    refusal, what such a file may hold instead of pickled code.
    """
    import torch  # heavy (seconds): loaded only when a .pt file is read

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        refs = f" (it references {found.group(1)})" if found else ""
        raise WsiError(f"{path}: refused: loading it would execute pickled code{refs}; {allowed}") from exc
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        raise WsiError(
            f"{path}: not a {kind} (truncated or corrupt: {type(exc).__name__}: {reason})"
        ) from exc
