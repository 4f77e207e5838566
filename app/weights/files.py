"""Names, paths and file handling shared by the weights package: the folder, checksums (atomic
writes: app.atomic)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from app.atomic import KERAS_WEIGHTS_SUFFIX

# The folder converted models live in. Functions that default to it at call time read it through
# weights_dir(), so setting app.weights.WEIGHTS_DIR points the whole package elsewhere (the tests do).
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
KERAS_SUFFIX = KERAS_WEIGHTS_SUFFIX

DOWNLOAD_HINT = "python -m app.weights download"
CONVERT_HINT = "python -m app.weights convert FILE.pth"


def weights_dir() -> Path:
    """app.weights.WEIGHTS_DIR as it is now (a caller may have pointed it elsewhere)."""
    import app.weights

    return app.weights.WEIGHTS_DIR


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
