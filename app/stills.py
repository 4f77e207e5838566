"""Annotated still images: `--output` for an image source writes images, as Ultralytics' predict does.

    --source photo.jpg --output out.jpg         # one annotated image
    --source photos/   --output annotated/      # the folder's images, annotated, under their own names

A video output (.mp4, .avi) for images stays possible (a slide show, app.outputs.VideoOutput).
`image_output_path` checks the path before any work (one line, app.errors.OutputError, exit 7);
`ImageOutput` writes each image whole: encoded in memory, written to a temporary file beside it and
renamed over the target, so a run stopped mid-write never leaves half an image.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import cv2
import numpy as np

from app.atomic import write_atomically
from app.errors import OutputError
from app.outputs import VIDEO_CODECS, check_output_path
from app.sources import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


def wants_images(path: str | PathLike | None) -> bool:
    """Whether --output names images rather than a video: an image file name (.jpg, .png, ...), an
    existing folder, or a name ending in a slash or with no extension (a folder to create)."""
    if not path:
        return False
    text = str(path)
    target = Path(text).expanduser()
    try:
        is_dir = target.is_dir()
    except OSError:  # a name the file system refuses (too long): app.outputs' checks say so in one line
        is_dir = False
    return (target.suffix.lower() in IMAGE_SUFFIXES or is_dir or text.endswith(("/", os.sep))
            or target.suffix == "")


@dataclass(frozen=True)
class ImageTarget:
    path: Path  # the image file, or the folder the images go into
    folder: bool


def image_output_path(path: str | PathLike, source, overwrite: bool = False) -> ImageTarget:
    """Where the annotated images of `source` (an app.sources source) go; OutputError (one line) when
    the source is not images, when several images would go into one file, or when a file would be
    replaced without --overwrite."""
    text = str(path)
    target = Path(text).expanduser()
    if getattr(source, "kind", "") != "images":
        raise OutputError(f"{target} is an image or folder name, but {source.description} is a video or camera: "
                          f"give --output a video file name ({', '.join(VIDEO_CODECS)})")
    names = [Path(p).name for p in getattr(source, "paths", ())]
    as_file = target.suffix.lower() in IMAGE_SUFFIXES and not target.is_dir()
    if as_file:
        if len(names) > 1:
            raise OutputError(f"{len(names)} images cannot go into one file {target}: give --output a folder, "
                              f"e.g. {target.with_suffix('')}{os.sep}")
        return ImageTarget(check_output_path(target, overwrite), folder=False)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target} is a file; give --output a folder for the annotated images")
    if not target.exists():
        check_output_path(target, overwrite)  # its parent exists and can be written in; created on the first image
        return ImageTarget(target, folder=True)
    taken = [name for name in names if (target / name).exists()]
    if taken and not overwrite:
        raise OutputError(f"{target / taken[0]} already exists ({len(taken)} of the images); "
                          "pass --overwrite to replace them or choose another folder")
    try:
        with tempfile.NamedTemporaryFile(dir=target, prefix=".pose-write-test-"):
            pass
    except OSError as error:
        raise OutputError(f"cannot write in folder {target} ({error.strerror}); choose another output path") from error
    return ImageTarget(target, folder=True)


class ImageOutput:
    """Writes annotated images to an ImageTarget: the one file, or the folder under each image's name."""

    def __init__(self, target: ImageTarget):
        self.target = target
        self.images_written = 0

    def write(self, image: np.ndarray, name: str) -> Path:
        """Write one uint8 BGR (H, W, 3) image; name: the source image's file name (used for a folder)."""
        path = self.target.path / (name or f"{self.images_written:06d}.jpg") if self.target.folder else self.target.path
        if self.target.folder:
            path.parent.mkdir(exist_ok=True)
        ok, encoded = cv2.imencode(path.suffix if path.suffix.lower() in IMAGE_SUFFIXES else ".jpg", image)
        if not ok:
            raise OutputError(f"OpenCV cannot encode {path.name}; use a .jpg or .png name")
        try:
            write_atomically(path, lambda temporary: temporary.write_bytes(encoded.tobytes()))
        except OSError as error:
            raise OutputError(f"cannot write {path} ({error.strerror})") from error
        self.images_written += 1
        return path

    def close(self) -> None:
        if self.images_written == 0:
            log.warning("no image reached %s, so none was written", self.target.path)
