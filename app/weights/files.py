"""Names, paths and file handling shared by the weights package: checksums, atomic writes."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

# The folder converted models live in. Functions that default to it at call time read it through
# weights_dir(), so setting app.weights.WEIGHTS_DIR points the whole package elsewhere (the tests do).
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
KERAS_SUFFIX = ".weights.h5"

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


def _write_atomically(path: Path, write) -> None:
    """write(temp_path) into a hidden temp file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(path)
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _temp_path(path: Path) -> Path:
    """A hidden, unique name beside `path` (same file system, so the final rename is atomic).

    Not tempfile.mkstemp: its files are private (0600) and would stay so after the rename. The name
    keeps .weights.h5 at the end because Keras refuses to write weights under any other suffix.
    """
    suffix = KERAS_SUFFIX if path.name.endswith(KERAS_SUFFIX) else path.suffix
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part{suffix}")

