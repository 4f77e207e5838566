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
import shutil
import tempfile
from os import PathLike
from pathlib import Path

import cv2
import numpy as np

from app.errors import OutputError
from app.skeleton import KEYPOINT_NAMES

log = logging.getLogger(__name__)

# Container and codec by the file's extension, written with PyAV (FFmpeg's libraries). An .mp4 is
# fragmented (below), so what was written plays after any stop, SIGKILL and power loss included;
# an .avi (MJPEG) needs the index written when it is closed (Ctrl-C, SIGTERM, a full disk close
# it; a SIGKILL leaves it unreadable, as OpenCV's writer does). Measured against OpenCV's writer
# in docs/benchmarks.md, "Video writer (issue 21)".
VIDEO_FORMATS = {".mp4": ("mp4", "libx264"), ".avi": ("avi", "mjpeg")}
VIDEO_CODECS = {suffix: codec for suffix, (_, codec) in VIDEO_FORMATS.items()}
# A fragmented MP4 has no index at its end to lose: `empty_moov` writes the header first, and
# `frag_every_frame` makes each frame a fragment of its own (about 100 bytes of header each),
# handed to the OS at once (`flush_packets`): a SIGKILL or a power cut loses at most the frame
# being written. A key frame every KEYFRAME_S seconds keeps seeking quick.
FRAGMENTED_MP4 = {"movflags": "frag_every_frame+empty_moov+default_base_moof", "flush_packets": "1"}
KEYFRAME_S = 1.0
# Space an output keeps free for closing itself (an .avi's index is 16 bytes a frame; the JSON's
# closing 4 bytes): below it, the run stops with "disk full" before a write can fail half-way.
RESERVE_BYTES = 256 * 1024
RESERVE_PER_FRAME = 32
# libx264: `zerolatency` makes each frame leave the encoder at once (no look-ahead, no B-frames),
# so each fragment is the frame just written; crf 23 is x264's default quality. `ultrafast`: on the
# street clip (1280x720) 22 ms a frame and 20 kB against veryfast's 85 ms and 12 kB, and OpenCV's
# mp4v 45 ms and 16 kB (docs/benchmarks.md): the writer must not slow the demo down.
X264_OPTIONS = {"preset": "ultrafast", "tune": "zerolatency", "crf": "23"}


def _lock(path: Path) -> int:
    """Opens `path` for writing without truncating it and takes an exclusive advisory lock (flock),
    held until the returned descriptor is closed (by the kernel too, when the process dies).
    OutputError when another run holds it: two runs writing one file would leave neither whole.
    Windows has no flock: there the file is opened without a lock (a second run is not stopped)."""
    # O_BINARY (Windows only, 0 elsewhere): JsonOutput writes at byte offsets, and a descriptor
    # opened in text mode would turn each "\n" into "\r\n" behind them.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
    try:
        import fcntl
    except ImportError:
        return descriptor
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise OutputError(f"{path} is being written by another run; wait for it to end "
                          "or choose another output path") from None
    return descriptor


def in_use(path: Path) -> bool:
    """Whether another run holds `path`'s lock (_lock) now; takes no lock itself. False where there
    are no such locks (Windows)."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)


def check_space(path: Path, frames: int, upcoming: int, per_frame: int = RESERVE_PER_FRAME) -> None:
    """OutputError "disk full" when the disk of `path` has less than `upcoming` bytes (the next
    write) plus the reserve to close `path` whole after `frames` frames. One statvfs call (on
    Windows GetDiskFreeSpaceEx), through shutil.disk_usage."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return  # the write itself will tell
    if free < upcoming + RESERVE_BYTES + per_frame * frames:
        import errno

        raise OutputError(disk_full_line(path, OSError(errno.ENOSPC, f"{free // 1024} KiB left"), frames))


def disk_full_line(path: Path, error: OSError, frames: int) -> str:
    """The one line for an output that could not be written (ENOSPC, EDQUOT, EIO ...)."""
    import errno

    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"disk full: cannot write {path} ({reason}) after {frames} frames; what was written "
                "is kept and readable; free some space and run again")
    return (f"cannot write {path} ({reason}) after {frames} frames; what was written is kept; "
            "check the disk and run again")


def check_output_path(path: str | PathLike, overwrite: bool = False) -> Path:
    """Fail now, with one line, if `path` cannot be written; returns it as a Path.

    Raises OutputError when its folder is missing, is a file, or is not writable (tried by creating
    and removing a temporary file there), when its name is longer than the file system allows,
    when it is a folder, when it exists and `overwrite` is False, or when another run is writing it.
    """
    path = Path(path).expanduser()
    folder = path.parent
    if not path.name:
        raise OutputError(f"output path {str(path)!r} names no file; give a file name for the output")
    if not folder.is_dir():
        for ancestor in [folder, *folder.parents]:
            if ancestor.exists() and not ancestor.is_dir():
                raise OutputError(f"{ancestor} is a file, not a folder; choose another output path")
        raise OutputError(f"folder {folder} does not exist; create it or choose another output path")
    try:
        # (os.pathconf is POSIX only: on Windows, NTFS's 255 characters)
        longest = os.pathconf(folder, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    except (OSError, ValueError):
        longest = 255
    if len(os.fsencode(path.name)) > longest:
        raise OutputError(f"output file name {path.name[:40]}... is {len(os.fsencode(path.name))} bytes long; "
                          f"this file system allows {longest}: choose a shorter name")
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
    if path.exists() and in_use(path):
        raise OutputError(f"{path} is being written by another run; wait for it to end "
                          "or choose another output path")
    return path


def check_video_path(path: str | PathLike) -> None:
    """OutputError unless `path` ends in an extension VideoOutput writes (checked before anything loads)."""
    if Path(path).suffix.lower() not in VIDEO_FORMATS:
        raise OutputError(f"cannot write video {Path(path).expanduser().absolute()}: unknown extension "
                          f"{Path(path).suffix or '(none)'}; use one of {', '.join(VIDEO_FORMATS)}")


def check_distinct(paths: dict[str, str | PathLike | None]) -> None:
    """OutputError when two of `paths` (e.g. {"--source": ..., "--output": ..., "--json": ...}) are
    the same file: the same path once `~`, `..` and links are resolved, or the same inode (a hard
    link). Checked before anything is opened for writing, so an input is never overwritten."""
    seen: list[tuple[str, Path]] = []
    for option, value in paths.items():
        if not value:
            continue
        path = Path(value).expanduser()
        resolved = Path(os.path.realpath(path))
        for other_option, other in seen:
            same = resolved == other
            if not same and path.exists() and other.exists():
                try:
                    same = os.path.samefile(path, other)
                except OSError:
                    same = False
            if same:
                raise OutputError(f"{option} and {other_option} are the same file ({resolved}); "
                                  f"give {option} a path of its own")
        seen.append((option, resolved))


class VideoOutput:
    """Writes BGR frames to .mp4 (H.264, fragmented) or .avi (MJPEG) at `fps`.

    The file opens on the first frame, so the video's size is that frame's (W, H) unless `size`
    is given; later frames of another size are fitted into it, keeping their aspect ratio, with
    black borders (logged once). Encoders need even
    sizes (they would silently drop the last odd row or column), so odd sizes are padded with a
    black border on the right/bottom instead. The file is locked against a second run while it is
    written (`_lock`). A write that fails (a full disk) raises OutputError with one line; what was
    written before stays readable. `close()` is idempotent.
    """

    def __init__(self, path: str | PathLike, fps: float, size: tuple[int, int] | None = None):
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_FORMATS:
            raise OutputError(f"cannot write video {self.path}; use one of {', '.join(VIDEO_FORMATS)}")
        if not (math.isfinite(fps) and fps > 0):
            raise OutputError(f"video frame rate must be positive, got {fps}")
        self.fps = float(fps)
        self.size = size  # (W, H) frames are resized to; set by the first frame when None
        self.frames_written = 0
        self._container = None
        self._stream = None
        self._lock_fd: int | None = None
        self._closed = False
        self._failed = False
        self._warned_resize = False

    def _open(self, frame_size: tuple[int, int]) -> None:
        import av
        from fractions import Fraction

        if self.size is None:
            self.size = frame_size
        width, height = self.size
        encoded = (max(2, width + width % 2), max(2, height + height % 2))
        container_format, codec = VIDEO_FORMATS[self.path.suffix.lower()]
        self._lock_fd = _lock(self.path)
        try:
            if self.path.is_file():
                os.ftruncate(self._lock_fd, 0)
            self._container = av.open(str(self.path), "w", format=container_format,
                                      options=FRAGMENTED_MP4 if container_format == "mp4" else {"flush_packets": "1"})
            rate = Fraction(self.fps).limit_denominator(1001)
            stream = self._container.add_stream(codec, rate=rate)
            stream.width, stream.height = encoded
            if codec == "libx264":
                stream.pix_fmt = "yuv420p"
                stream.options = dict(X264_OPTIONS)
                stream.codec_context.gop_size = max(1, round(self.fps * KEYFRAME_S))
            else:
                stream.pix_fmt = "yuvj420p"
                stream.options = {"q:v": "3"}  # JPEG quality close to OpenCV's MJPG (95)
                stream.codec_context.qmin = stream.codec_context.qmax = 3
            self._stream = stream
        except OSError as error:
            self._failed = True
            self._release()
            raise OutputError(f"cannot write video {self.path} ({error.strerror or error}); "
                              "choose another output path") from error
        except av.error.FFmpegError as error:  # the encoder refuses this size or rate
            self._failed = True
            self._release()
            raise OutputError(f"cannot encode {width}x{height} frames at {self.fps:g} fps into {self.path} "
                              f"({error}); use the other container (.mp4 or .avi) or a smaller source") from error
        self._padding = (encoded[1] - height, encoded[0] - width)  # (bottom, right)

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 BGR (H, W, 3) frame."""
        import av

        if self._closed:
            raise ValueError(f"video {self.path} is already closed")
        height, width = frame.shape[:2]
        if self._container is None:
            self._open((width, height))
        if (width, height) != self.size:
            from app.window import letterbox

            if not self._warned_resize:
                log.warning("frame size changed from %s to %s; fitting frames into the video's size "
                            "(black borders keep their shape)", self.size, (width, height))
                self._warned_resize = True
            frame = letterbox(frame, self.size)  # a portrait photo among landscapes is not stretched
        bottom, right = self._padding
        if bottom or right:
            frame = cv2.copyMakeBorder(frame, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=0)
        check_space(self.path, self.frames_written, frame.nbytes // 4)  # an encoded frame is far smaller
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
        picture.pts = self.frames_written
        try:
            self._container.mux(self._stream.encode(picture))
        except OSError as error:  # av.error.OSError (ENOSPC ...) is an OSError
            self._failed = True
            raise OutputError(disk_full_line(self.path, error, self.frames_written)) from None
        except av.error.FFmpegError as error:
            self._failed = True
            raise OutputError(f"cannot encode frame {self.frames_written} ({width}x{height}) into {self.path} "
                              f"({error}); the frames before it are kept") from None
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file (the encoder's last frames; an .avi's index). Safe to call twice; after
        a failed write it keeps what is on disk and raises nothing."""
        if self._closed:
            return
        self._closed = True
        if self._container is None:
            log.warning("no frame reached %s, so no video was written", self.path)
            return
        try:
            if not self._failed:
                self._container.mux(self._stream.encode(None))  # flush the encoder
        except OSError as error:
            log.warning("%s", disk_full_line(self.path, error, self.frames_written))
        finally:
            self._release()

    def _release(self) -> None:
        try:
            if self._container is not None:
                self._container.close()
        except OSError as error:  # the trailer could not be written: the fragments before it play
            log.warning("%s", disk_full_line(self.path, error, self.frames_written))
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> VideoOutput:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _round(value: float, decimals: int = 2) -> float | None:
    value = float(value)
    return round(value, decimals) if math.isfinite(value) else None


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
            # Locked against a second run (_lock), then emptied. Unbuffered: each write below is one
            # system call, so it lands whole or not at all.
            self._file = os.fdopen(_lock(self.path), "wb", buffering=0)
            if self.path.is_file():  # not a device such as /dev/null
                self._file.truncate(0)
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
        # Milliseconds: two live frames can arrive within 10 ms of each other.
        record = {"frame": int(index), "time_s": _round(time_s, 3), "people": json_ready(list(people))}
        text = ("," if self.frames_written else "") + "\n" + json.dumps(record, allow_nan=False)
        data = text.encode()
        check_space(self.path, self.frames_written, len(data), per_frame=0)
        try:
            self._write_at(self._end, data + self._CLOSING)  # one write: never a moment without the closing
        except OSError as error:
            self._restore_closing()
            raise OutputError(disk_full_line(self.path, error, self.frames_written)) from None
        self._end += len(data)
        self.frames_written += 1

    def _write_at(self, offset: int, data: bytes) -> None:
        self._file.seek(offset)
        written = self._file.write(data)
        while written < len(data):  # a short write on a regular file only happens when the disk is full
            written += self._file.write(data[written:])

    def _restore_closing(self) -> None:
        """After a failed write (a full disk): the closing back after the last whole frame and the
        part of the failed record cut off, so the file parses again. The closing goes where the
        old one was, in blocks the file already has, so it fits on a full disk."""
        try:
            self._file.seek(self._end)
            self._file.write(self._CLOSING)
            self._file.truncate(self._end + len(self._CLOSING))
        except OSError as error:
            log.warning("could not repair %s after a failed write (%s)", self.path, error.strerror)

    def close(self) -> None:
        """Sync to disk and close; safe to call twice. The file is already complete before this."""
        if self._file.closed:
            return
        try:
            os.fsync(self._file.fileno())
        except OSError as error:  # the frames are in the file already; a sync that fails loses none here
            log.warning("could not sync %s to disk (%s)", self.path, error.strerror)
        finally:
            self._file.close()

    def __enter__(self) -> JsonOutput:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
