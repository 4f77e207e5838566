"""Whole files or none: write into a hidden temp file beside the target, then rename it into place.

    write_atomically(path, lambda temp: temp.write_bytes(data))

A reader (a player, a web server, the next start's cache check) never sees half a file, and a run
stopped in the middle leaves the old file, or none, never a truncated one. Used for every file the
project writes whole: converted weights, caches, still images, evaluation results.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

KERAS_WEIGHTS_SUFFIX = ".weights.h5"


def temp_path(path: Path) -> Path:
    """A hidden, unique name beside `path` (same file system, so the final rename is atomic).

    Not tempfile.mkstemp: its files are private (0600) and stay so after the rename, so a user's
    output image or results file would be unreadable to anyone else; a plain new file takes the
    user's umask. The name ends with the suffix of `path`, ".weights.h5" whole (Keras refuses to
    write weights under any other ending).
    """
    suffix = KERAS_WEIGHTS_SUFFIX if path.name.endswith(KERAS_WEIGHTS_SUFFIX) else path.suffix
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part{suffix}")


def write_atomically(path: Path, write, make_folder: bool = False) -> None:
    """write(temp_path) into a hidden temp file beside `path`, then rename over `path`. make_folder:
    create path's folder when missing (else a missing folder is the OSError it is). Raises what
    write or the file system raise (OSError), the temp file removed."""
    path = Path(path)
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(path)
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
