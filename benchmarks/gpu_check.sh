#!/usr/bin/env bash
# The GPU check of issue 18 in one call (at most 9 minutes on one H100/H200); see benchmarks/gpu_check.py.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine: writes benchmarks/results/gpu_check_cuda.*
#   bash benchmarks/gpu_check.sh --smoke    # same steps on the CPU at toy sizes, < 3 minutes:
#                                           # writes benchmarks/out/gpu_check_smoke/
#
# Python: the checkout's .venv when there is one (made by `uv sync`), else `python3` (the lent H200 image,
# which has torch, timm, h5py, typer, rich, scikit-image, scikit-learn but not every dependency: carry the
# missing ones as wheels; the import check below names them).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}"
missing=$("$PYTHON" - <<'PY'
import importlib.util
mods = ["torch", "timm", "h5py", "zarr", "pydantic", "typer", "rich", "yaml", "skimage", "sklearn",
        "openslide", "tifffile", "cv2", "safetensors", "matplotlib", "PIL"]
print(" ".join(m for m in mods if importlib.util.find_spec(m) is None))
PY
)
if [[ -n "$missing" ]]; then
    echo "gpu_check: missing Python modules for $PYTHON: $missing" >&2
    exit 2
fi
if [[ " $* " != *" --smoke "* && " $* " != *" --help "* ]] \
    && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: no CUDA device here; use --smoke for the CPU run" >&2
    exit 2
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_check.py "$@"
