"""Outputs that are never lost: an annotated video and a JSON file of every frame's people.

Check every output path with `check_output_path` before the run starts, so a typo fails in a
second rather than after an hour of video. Both outputs are context managers; close them in a
`finally` (or `with`) so Ctrl-C still leaves a video that plays. The JSON file needs no closing to
stay valid: it is a complete document after every frame.

JSON format (close to COCO keypoint results, one object per person per frame):

    {"source": "clip.mp4", "fps": 25.0, "width": 518, "height": 496,
     "keypoint_names": ["nose", "left_eye", ...],
     "frames": [
      {"frame": 0, "time_s": 0.0, "people": [
        {"track_id": 3, "bbox": [x1, y1, x2, y2], "score": 0.91,
         "keypoints": [x, y, s, x, y, s, ...]}]},       # K triples in keypoint_names order
      ...]}

Pixels are image coordinates of the source frame; numbers are rounded to 2 decimals; a value that
is not finite (NaN keypoint) is written as null, and so are fps/width/height when not given;
`track_id` is null when there is no tracker. People may carry extra keys (e.g. "visible": K bools).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from os import PathLike
from pathlib import Path

import cv2
import numpy as np

from app.errors import OutputError
from app.skeleton import KEYPOINT_NAMES

log = logging.getLogger(__name__)

# Codecs every OpenCV build with FFmpeg writes and reads back; chosen by the file's extension.
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}


def check_output_path(path: str | PathLike, overwrite: bool = False) -> Path:
    """Fail now, with one line, if `path` cannot be written; returns it as a Path.

    Raises OutputError when its folder is missing or not writable (tried by creating and removing
    a temporary file there), when it is a folder, or when it exists and `overwrite` is False.
    """
    path = Path(path).expanduser()
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"folder {folder} does not exist; create it or choose another output path")
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name for the output")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it")
    try:
        # Permission bits do not tell the whole story (read-only mounts, ACLs, root), so try it.
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".pose-write-test-"):
            pass
    except OSError as error:
        raise OutputError(f"cannot write in folder {folder} ({error.strerror}); "
                          "choose another output path") from error
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{path} is read-only; choose another output path")
    return path


class VideoOutput:
    """Writes BGR frames to .mp4 (mp4v) or .avi (MJPG) at `fps`.

    The writer opens on the first frame, so the video's size is that frame's (W, H) unless `size`
    is given; later frames of another size are resized to it (logged once). Encoders need even
    sizes (they would silently drop the last odd row or column), so odd sizes are padded with a
    black border on the right/bottom instead. `close()` is idempotent.
    """

    def __init__(self, path: str | PathLike, fps: float, size: tuple[int, int] | None = None):
        self.path = Path(path)
        codec = VIDEO_CODECS.get(self.path.suffix.lower())
        if codec is None:
            raise OutputError(f"cannot write video {self.path.name}; use one of {', '.join(VIDEO_CODECS)}")
        if not (math.isfinite(fps) and fps > 0):
            raise OutputError(f"video frame rate must be positive, got {fps}")
        self.fps = float(fps)
        self.size = size  # (W, H) frames are resized to; set by the first frame when None
        self.frames_written = 0
        self._fourcc = cv2.VideoWriter_fourcc(*codec)
        self._writer: cv2.VideoWriter | None = None
        self._closed = False
        self._warned_resize = False

    def _open(self, frame_size: tuple[int, int]) -> None:
        if self.size is None:
            self.size = frame_size
        width, height = self.size
        encoded = (max(2, width + width % 2), max(2, height + height % 2))
        self._writer = cv2.VideoWriter(str(self.path), self._fourcc, self.fps, encoded)
        if not self._writer.isOpened():
            raise OutputError(f"OpenCV cannot write video {self.path}; check the folder and codec")
        self._padding = (encoded[1] - height, encoded[0] - width)  # (bottom, right)

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 BGR (H, W, 3) frame."""
        if self._closed:
            raise ValueError(f"video {self.path} is already closed")
        height, width = frame.shape[:2]
        if self._writer is None:
            self._open((width, height))
        if (width, height) != self.size:
            if not self._warned_resize:
                log.warning("frame size changed from %s to %s; resizing frames to the video's size",
                            self.size, (width, height))
                self._warned_resize = True
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        bottom, right = self._padding
        if bottom or right:
            frame = cv2.copyMakeBorder(frame, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=0)
        self._writer.write(frame)
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file (writes the index/moov atom that makes it play). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.release()
        else:
            log.warning("no frame reached %s, so no video was written", self.path)

    def __enter__(self) -> VideoOutput:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _round(value: float) -> float | None:
    value = float(value)
    return round(value, 2) if math.isfinite(value) else None


def json_ready(value):
    """`value` with numpy scalars and arrays turned into Python ones, floats rounded to 2 decimals
    and NaN/inf turned into None (strict JSON has no NaN), through nested dicts and lists."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _round(value)
    return value


def person_record(box: np.ndarray, score: float, keypoints: np.ndarray, keypoint_scores: np.ndarray,
                  track_id: int | None = None) -> dict:
    """One person in the JSON format: box (4,) xyxy, keypoints (K, 2), keypoint_scores (K,)."""
    triples = np.concatenate([np.reshape(keypoints, (-1, 2)), np.reshape(keypoint_scores, (-1, 1))], axis=1)
    return json_ready({
        "track_id": track_id,
        "bbox": np.reshape(box, 4),
        "score": score,
        "keypoints": triples.reshape(-1),
    })


class JsonOutput:
    """Writes the module docstring's JSON format, one frame at a time, always a complete document.

    After each frame the file ends with the closing `]}`; the next frame is written over that
    closing together with a new one, in a single write, so a run stopped at any point (Ctrl-C,
    a crash, kill -9) leaves a file that json.load reads. Each write goes straight to the OS
    (no Python buffer); the file is synced to disk on close.
    """

    _CLOSING = b"\n]}\n"

    def __init__(self, path: str | PathLike, *, source: str = "", fps: float | None = None,
                 width: int | None = None, height: int | None = None,
                 keypoint_names: tuple[str, ...] = KEYPOINT_NAMES):
        self.path = Path(path)
        self.frames_written = 0
        header = json_ready({"source": str(source), "fps": fps, "width": width, "height": height,
                             "keypoint_names": list(keypoint_names)})
        # Insert the frames array by hand so the header keeps json.dumps' own escaping.
        opening = json.dumps(header)[:-1] + ', "frames": ['
        try:
            # Unbuffered: each write below is one system call, so it lands whole or not at all.
            self._file = open(self.path, "wb", buffering=0)
            self._write_at(0, opening.encode() + self._CLOSING)
        except OSError as error:
            raise OutputError(f"cannot write {self.path} ({error.strerror}); "
                              "choose another output path") from error
        self._end = len(opening.encode())  # where the closing starts

    def write_frame(self, index: int, time_s: float, people: list[dict]) -> None:
        """Append one frame; `people` are dicts as in the module docstring (see `person_record`).
        Extra keys (e.g. "visible") are kept; numbers go through `json_ready`."""
        if self._file.closed:
            raise ValueError(f"{self.path} is already closed")
        record = {"frame": int(index), "time_s": _round(time_s), "people": json_ready(list(people))}
        text = ("," if self.frames_written else "") + "\n" + json.dumps(record, allow_nan=False)
        data = text.encode()
        self._write_at(self._end, data + self._CLOSING)  # one write: never a moment without the closing
        self._end += len(data)
        self.frames_written += 1

    def _write_at(self, offset: int, data: bytes) -> None:
        self._file.seek(offset)
        written = self._file.write(data)
        while written < len(data):  # a short write on a regular file only happens when the disk is full
            written += self._file.write(data[written:])

    def close(self) -> None:
        """Sync to disk and close; safe to call twice. The file is already complete before this."""
        if self._file.closed:
            return
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> JsonOutput:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
