"""Where frames come from: a camera, a video file, one image or a folder of images.

`open_source(spec)` checks the input before the run starts and returns a `FrameSource`: iterate
it for `Frame(index, image, timestamp_s, name)`, where every image is uint8 BGR (H, W, 3) (see
`normalize_frame`). A source is single-pass, like a file: a second loop continues where the first
stopped. Use it as a context manager, or call `close()`.

    with open_source("0") as source:          # camera index
        for frame in source: ...
    open_source("clip.mp4"), open_source("photo.jpg"), open_source("photos/")

What each kind reports:

    kind      fps                                 frame_count                      is_live  timestamp_s
    camera    the camera's rate, or 30 if unknown  None                             True     wall clock since the first frame
    video     the file's rate, or 30 if unknown    the container's count (estimate) False    index / fps
    images    `image_fps` (default 1.0)            number of image files            False    index / fps

Images get a made-up rate so a video written from them plays one image per second by default;
they are not a time series, so `kind == "images"` tells the caller not to smooth across them.
`size` is the first frame's (W, H); frames whose size changes later are passed through as they are.

Threading: a source is read from one thread at a time; `close()` may come from another thread and
waits for a read in progress. For cameras the newest frame matters more than every frame, so wrap
a live source in `LatestFrameReader`, which reads in its own thread and keeps only the newest frame.
Files are read in order with no drop (iterate the source directly), so a video in gives a video
out with the same frame count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import cv2
import numpy as np

from app.errors import CameraError, SourceError

log = logging.getLogger(__name__)

# What cv2.imread decodes; matched case-insensitively. Anything else is tried as a video.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".jp2",
     ".pbm", ".pgm", ".ppm", ".pnm", ".pxm", ".sr", ".ras", ".exr", ".hdr", ".pic"}
)
DEFAULT_FPS = 30.0  # when a camera or container does not say (CAP_PROP_FPS 0 or NaN)
DEFAULT_IMAGE_FPS = 1.0
# Containers store an estimated frame count; ffmpeg's is often one more than the frames it decodes
# (dancer.avi: 1572 reported, 1571 decoded), so only a larger shortfall means a cut-off file.
FRAME_COUNT_SLACK = 1

CaptureFactory = Callable[..., "cv2.VideoCapture"]


@dataclass(frozen=True)
class Frame:
    """One input frame: `image` uint8 BGR (H, W, 3); `name` is the file name for images, else ""."""

    index: int
    image: np.ndarray
    timestamp_s: float
    name: str = ""


def normalize_frame(image: np.ndarray) -> np.ndarray:
    """Any decoded frame -> uint8 BGR (H, W, 3), C-contiguous; returned as is when it already is.

    Grayscale (H, W) or (H, W, 1) -> BGR; BGRA (H, W, 4) -> BGR; uint16 -> uint8 keeping the top
    8 bits (>> 8, what OpenCV does for 16-bit images); float in [0, 1] -> uint8 (clipped, rounded).
    Raises SourceError for an empty image or one with another dtype or channel count.
    """
    if image is None or image.size == 0:
        raise SourceError("got an empty frame from the source; check the file or camera")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise SourceError(f"unsupported frame shape {image.shape}; expected gray, BGR or BGRA")

    # Convert the depth first: it is cheaper on the single channel of a gray image.
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype.kind == "f":
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise SourceError(f"unsupported frame dtype {image.dtype}; expected uint8, uint16 or float")

    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    # OpenCV drawing writes in place and needs contiguous memory; this copies only if needed.
    return np.ascontiguousarray(image)


class FrameSource:
    """Common surface of all sources; subclasses implement `_read() -> (image, name) | None`."""

    kind = ""

    def __init__(self, description: str, fps: float, size: tuple[int, int],
                 frame_count: int | None, is_live: bool):
        self.description = description  # for messages and the JSON header
        self.fps = fps
        self.size = size  # first frame's (W, H)
        self.frame_count = frame_count
        self.is_live = is_live
        self.frames_read = 0
        self._lock = threading.Lock()
        self._closed = False

    def __iter__(self) -> Iterator[Frame]:
        while True:
            with self._lock:
                if self._closed:
                    return
                item = self._read()
            if item is None:
                return
            image, name = item
            yield Frame(self.frames_read, normalize_frame(image), self._timestamp(), name)
            self.frames_read += 1

    def _timestamp(self) -> float:
        return self.frames_read / self.fps

    def _read(self) -> tuple[np.ndarray, str] | None:
        raise NotImplementedError

    def _release(self) -> None:
        """Free what the source holds; called once, under the read lock."""

    def close(self) -> None:
        """Release the capture; safe to call twice and from another thread than the reader."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._release()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.description!r}, fps={self.fps:g}, size={self.size}, "
                f"frame_count={self.frame_count})")


def _capture_fps(capture) -> float:
    fps = capture.get(cv2.CAP_PROP_FPS)
    return float(fps) if np.isfinite(fps) and fps > 0 else DEFAULT_FPS


class VideoSource(FrameSource):
    """A video file read in order, every frame; a file cut off halfway ends early with a warning."""

    kind = "video"

    def __init__(self, path: Path, capture_factory: CaptureFactory = cv2.VideoCapture):
        capture = capture_factory(str(path))
        ok, first = capture.read() if capture.isOpened() else (False, None)
        if not ok or first is None:
            capture.release()
            raise SourceError(f"cannot decode video {path}: not a video OpenCV can read, or empty")
        reported = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        height, width = first.shape[:2]
        super().__init__(str(path), _capture_fps(capture), (width, height),
                         reported if reported > 0 else None, is_live=False)
        self._capture = capture
        self._pending = first

    def _read(self):
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image, ""
        ok, image = self._capture.read()
        if ok and image is not None:
            return image, ""
        if self.frame_count is not None and self.frames_read < self.frame_count - FRAME_COUNT_SLACK:
            log.warning("%s ended after %d of the %d frames its header announces (file cut off?)",
                        self.description, self.frames_read, self.frame_count)
        return None

    def _release(self) -> None:
        self._capture.release()


def _quietly(capture_factory: CaptureFactory, index: int):
    """capture_factory(index) without OpenCV's log lines: each backend it tries reports a missing
    camera on its own (about 15 lines); the CameraError that follows says it once. --debug keeps them."""
    if log.isEnabledFor(logging.DEBUG):
        return capture_factory(index)
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return capture_factory(index)
    finally:
        cv2.utils.logging.setLogLevel(previous)


class CameraSource(FrameSource):
    """A live camera: no first frame within `timeout_s` -> CameraError at open; `max_failed_reads`
    failed reads in a row mid-run -> CameraError raised from iteration (so the caller can close
    its outputs cleanly)."""

    kind = "camera"

    def __init__(self, index: int, capture_factory: CaptureFactory = cv2.VideoCapture,
                 timeout_s: float = 5.0, max_failed_reads: int = 5, retry_pause_s: float = 0.1,
                 size: tuple[int, int] | None = None, fps: float | None = None):
        capture = _quietly(capture_factory, index)
        if not capture.isOpened():
            capture.release()
            raise CameraError(f"cannot open camera {index}: no camera at that index, or it is in use")
        # Asked, not promised: a camera picks its nearest mode (see `requested` against `size`/`fps`).
        self.requested = (size, fps)
        if size is not None:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        if fps is not None:
            capture.set(cv2.CAP_PROP_FPS, fps)
        # Cameras often return empty reads while they start up, so poll until the deadline. A read
        # that blocks is bounded by the backend's own timeout (V4L2: 10 s).
        deadline = time.monotonic() + timeout_s
        while True:
            ok, first = capture.read()
            if ok and first is not None:
                break
            if time.monotonic() >= deadline:
                capture.release()
                raise CameraError(f"camera {index} opened but sent no frame within {timeout_s:g} s; "
                                  "is another program using it?")
            time.sleep(min(retry_pause_s, timeout_s))
        height, width = first.shape[:2]
        super().__init__(f"camera {index}", _capture_fps(capture), (width, height), None, is_live=True)
        self._capture = capture
        self._pending = first
        self._max_failed_reads = max_failed_reads
        self._retry_pause_s = retry_pause_s
        self._start = time.monotonic()

    def _timestamp(self) -> float:
        return time.monotonic() - self._start

    def _read(self):
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image, ""
        for attempt in range(self._max_failed_reads):
            ok, image = self._capture.read()
            if ok and image is not None:
                return image, ""
            if attempt + 1 < self._max_failed_reads:
                time.sleep(self._retry_pause_s)
        raise CameraError(f"{self.description} stopped delivering frames after {self.frames_read}; "
                          "check its cable or whether another program took it")

    def _release(self) -> None:
        self._capture.release()


class ImageSource(FrameSource):
    """One image file or a folder of images (sorted by name, not recursive); files that do not
    decode are skipped with a warning."""

    kind = "images"

    def __init__(self, paths: list[Path], description: str, fps: float = DEFAULT_IMAGE_FPS):
        self._paths = list(paths)
        first = None
        while self._paths and first is None:
            first = self._decode(self._paths[0])
            if first is None:
                self._paths.pop(0)
        if first is None:
            raise SourceError(f"no readable image in {description}; check the files")
        height, width = first.shape[:2]
        super().__init__(description, fps, (width, height), len(self._paths), is_live=False)
        self._next = 0
        self._pending = first

    @staticmethod
    def _decode(path: Path) -> np.ndarray | None:
        # IMREAD_COLOR also applies the EXIF orientation of phone photos and maps gray, alpha and
        # 16-bit files to 8-bit BGR.
        try:
            data = path.read_bytes()
        except OSError as error:
            log.warning("skipping %s: cannot read it (%s)", path, error.strerror)
            return None
        # libjpeg decodes a JPEG cut short as far as it goes and fills the rest with grey ("Premature
        # end of JPEG file", without a file name): a JPEG must end with its EOI marker, FF D9.
        if path.suffix.lower() in (".jpg", ".jpeg") and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
            log.warning("skipping %s: the JPEG is cut short or damaged", path)
            return None
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if image is None:
            log.warning("skipping %s: not an image OpenCV can decode", path)
        return image

    def _read(self):
        while self._next < len(self._paths):
            path = self._paths[self._next]
            self._next += 1
            if self._pending is not None:
                image, self._pending = self._pending, None
            else:
                image = self._decode(path)
            if image is not None:
                return image, path.name
        return None


def open_source(spec: str | PathLike, *, camera_timeout_s: float = 5.0,
                capture_factory: CaptureFactory = cv2.VideoCapture,
                image_fps: float = DEFAULT_IMAGE_FPS, camera_size: tuple[int, int] | None = None,
                camera_fps: float | None = None) -> FrameSource:
    """Open a camera index ("0"), a video file, an image file or a folder of images.

    A spec made only of digits is a camera index; write "./0" for a file or folder named 0.
    Checks the input now (the first frame is decoded) so the run fails before it starts.
    Raises SourceError (missing, empty or undecodable input) or CameraError (no camera, busy).
    `capture_factory` builds the cv2.VideoCapture for cameras and videos (tests pass a fake).
    `camera_size` (W, H) and `camera_fps` are asked of a camera (ignored for files); the camera
    answers with its nearest mode, which the source's `size` and `fps` then report.
    """
    if not image_fps > 0:
        raise ValueError(f"image_fps must be positive, got {image_fps}")
    text = str(spec)
    if not text.strip():
        raise SourceError("--source is empty; give a camera index (0), a video, an image or a folder")
    if text.isdigit():
        return CameraSource(int(text), capture_factory, timeout_s=camera_timeout_s, size=camera_size,
                            fps=camera_fps)
    path = Path(text).expanduser()
    if not path.exists():
        for ancestor in path.parents:
            if ancestor.exists() and not ancestor.is_dir():
                raise SourceError(f"{ancestor} is a file, not a folder, so {path} does not exist; check the path")
        raise SourceError(f"{path} does not exist; pass a camera index, a video, an image or a folder")
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise SourceError(f"folder {path} has no images ({', '.join(sorted(IMAGE_SUFFIXES)[:4])}, ...)")
        return ImageSource(images, f"folder {path}", image_fps)
    if not path.is_file():  # /dev/zero, a pipe, a socket: no size, no end, nothing to seek
        raise SourceError(f"{path} is not a regular file (a device or a pipe); pass a video, an image or a "
                          "folder, or a camera by its index (e.g. 0)")
    if path.stat().st_size == 0:
        raise SourceError(f"{path} is an empty file (0 bytes)")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource([path], str(path), image_fps)
    return VideoSource(path, capture_factory)


class LatestFrameReader:
    """Reads a (live) source in a background thread and keeps only the newest frame.

    Iterating yields each new frame once; frames that arrived while the caller was busy are
    dropped (counted in `dropped`), so a slow pipeline shows the present, not a growing backlog.
    An error in the source (CameraError mid-run) is raised again from the caller's iteration.
    `close()` stops the thread and closes the source.
    """

    def __init__(self, source: FrameSource):
        self.source = source
        self.dropped = 0
        self._newest: Frame | None = None
        self._error: BaseException | None = None
        self._finished = False
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="LatestFrameReader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for frame in self.source:
                with self._changed:
                    if self._newest is not None:
                        self.dropped += 1
                    self._newest = frame
                    self._changed.notify_all()
                if self._stop.is_set():
                    break
        except BaseException as error:  # handed to the consumer thread, which re-raises it
            self._error = error
        finally:
            with self._changed:
                self._finished = True
                self._changed.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._newest is not None or self._finished)
                frame, self._newest = self._newest, None
                if frame is None:  # finished with nothing left
                    if self._error is not None:
                        raise self._error
                    return
            yield frame

    @property
    def fps(self) -> float:
        return self.source.fps

    @property
    def size(self) -> tuple[int, int]:
        return self.source.size

    @property
    def is_live(self) -> bool:
        return self.source.is_live

    @property
    def frame_count(self) -> int | None:
        return self.source.frame_count

    def close(self) -> None:
        self._stop.set()
        self.source.close()  # waits for a read in progress, then ends the thread's loop
        self._thread.join(timeout=5.0)

    def __enter__(self) -> LatestFrameReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
