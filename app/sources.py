"""Where frames come from: a camera, a network stream, a video file, one image or a folder of images.

`open_source(spec)` checks the input before the run starts and returns a `FrameSource`: iterate
it for `Frame(index, image, timestamp_s, name)`, where every image is uint8 BGR (H, W, 3) (see
`normalize_frame`). A source is single-pass, like a file: a second loop continues where the first
stopped. Use it as a context manager, or call `close()`.

    with open_source("0") as source:          # camera index
        for frame in source: ...
    open_source("clip.mp4"), open_source("photo.jpg"), open_source("photos/")
    open_source("rtsp://user:pass@192.168.1.20:554/stream1")   # rtsp, rtmp, http(s), tcp, udp

What each kind reports:

    kind      fps                                 frame_count                      is_live  timestamp_s
    camera    the camera's rate, or 30 if unknown  None                             True     wall clock since the first frame
    stream    the stream's rate, or 30 if unknown  None (live) or the file's count  live if no count: as camera, else as video
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

Network streams (`StreamSource`, any spec that starts with scheme://, never a file path): opened
through OpenCV's FFmpeg backend with an open and a read timeout; a live stream that drops is
reopened with a growing pause (0.5 s, 1 s, 2 s, 4 s, 4 s ...) until `reconnect_for_s` passes
without a frame, and only then raises CameraError. A URL is shown only through `mask_url`, so a
password in it never reaches a message, a log line or the JSON header.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
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

# URL schemes FFmpeg reads that people point the demo at: IP cameras (rtsp), streaming servers
# (rtmp), phone webcam apps and plain files on a web server (http), raw streams (tcp, udp).
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "tcp", "udp")
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
# Query keys whose values are secrets in camera URLs (...?user=admin&password=..., ?token=...).
_SECRET_KEY = re.compile(r"pass|pwd|token|secret|auth|key|sig", re.IGNORECASE)
MASK = "***"


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

    def status(self) -> str:
        """What the source is doing while no frame comes, for the window ("" when nothing to say):
        a stream that dropped says that it is reconnecting. Safe to call from any thread."""
        return ""

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

    # Live frames that arrive together (a stream's buffered frames after a connect) are stamped at
    # least this far apart, so the times of a run stay strictly increasing, as its frames are, in
    # the JSON's milliseconds too (app.outputs writes time_s to 3 decimals).
    LIVE_STAMP_STEP_S = 0.001

    def _live_timestamp(self) -> float:
        """Seconds since the source opened, strictly increasing from frame to frame."""
        stamp = max(time.monotonic() - self._start, getattr(self, "_last_stamp", -1.0) + self.LIVE_STAMP_STEP_S)
        self._last_stamp = stamp
        return stamp

    def _read(self) -> tuple[np.ndarray, str] | None:
        raise NotImplementedError

    def _release(self) -> None:
        """Free what the source holds; called once, under the read lock."""

    def interrupt(self) -> None:
        """Ask a read in progress in another thread to end soon, ahead of close(): a stream waiting
        to reconnect stops waiting. Nothing to do for the others (their read ends within a frame)."""

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


def quiet_ffmpeg() -> None:
    """FFmpeg's own messages go to stderr from C, for its developers ("[mov,mp4,...] moov atom not
    found"); our one-line errors and warnings say what failed. Kept with --debug (debug logging).
    OpenCV reads this once, when it first opens something with FFmpeg: call it before that."""
    if not log.isEnabledFor(logging.DEBUG):
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


class VideoSource(FrameSource):
    """A video file read in order, every frame; a file cut off halfway ends early with a warning."""

    kind = "video"

    def __init__(self, path: Path, capture_factory: CaptureFactory = cv2.VideoCapture):
        quiet_ffmpeg()  # "moov atom not found" before our own line on a file that is no video
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


@contextlib.contextmanager
def _opencv_silenced():
    """OpenCV's own log lines off for a while (they go to stderr from C++); --debug keeps them."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def _quietly(capture_factory: CaptureFactory, index: int):
    """capture_factory(index) without OpenCV's log lines: each backend it tries reports a missing
    camera on its own (about 15 lines); the CameraError that follows says it once. --debug keeps them."""
    with _opencv_silenced():
        return capture_factory(index)


def fourcc_text(code: float) -> str:
    """CAP_PROP_FOURCC's number -> its four letters ("MJPG", "YUYV"); "" when the backend gives none."""
    value = int(code) if math.isfinite(code) else 0
    if value <= 0:
        return ""
    return "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ")


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
            # Most USB webcams reach their large sizes (1280x720 and up) at full rate only in MJPG:
            # uncompressed YUYV would not fit through USB 2, so the driver offers those sizes in MJPG
            # alone. The format must be chosen before the size, or V4L2 picks the size among the
            # current format's modes. A camera without MJPG keeps its own format.
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
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
        self.fourcc = fourcc_text(capture.get(cv2.CAP_PROP_FOURCC))  # the format granted ("" if unknown)
        self._capture = capture
        self._pending = first
        self._max_failed_reads = max_failed_reads
        self._retry_pause_s = retry_pause_s
        self._start = time.monotonic()

    def _timestamp(self) -> float:
        return self._live_timestamp()

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


def url_scheme(spec: str | PathLike) -> str | None:
    """"rtsp" for "rtsp://host/x" (lower case); None when `spec` is not a URL (a path, a camera index)."""
    match = _URL.match(str(spec))
    return match[1].lower() if match else None


def mask_url(text: str) -> str:
    """`text` with the password of a URL and secret query values replaced by ***; not a URL: as is.

        rtsp://admin:s3cret@10.0.0.7:554/live?token=abc&ch=1 -> rtsp://admin:***@10.0.0.7:554/live?token=***&ch=1

    Masks more rather than less, so by hand (urllib.parse.urlsplit ends the user info at the first
    "/"): it ends at the last "@" before the query, so a password with an unescaped "/" or "@" is
    still hidden, and one with an unescaped "?" or "#" too (FFmpeg itself would misread such URLs).
    """
    match = _URL.match(text)
    if match is None:
        return text
    rest = text[match.end():]
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    head, tail = rest[:cut], rest[cut:]
    at = head.rfind("@")
    if at < 0 and "@" in tail and "=" not in rest[:rest.find("@")]:  # not an "@" in a query value
        head, tail, at = rest, "", rest.find("@")
    if at >= 0:
        user, colon, _ = head[:at].partition(":")
        if colon:
            head = f"{user}:{MASK}{head[at:]}"
    if tail.startswith("?"):
        query, hash_mark, fragment = tail[1:].partition("#")
        pairs = []
        for pair in query.split("&"):
            key, equals, _ = pair.partition("=")
            pairs.append(f"{key}={MASK}" if equals and _SECRET_KEY.search(key) else pair)
        tail = "?" + "&".join(pairs) + hash_mark + fragment
    return match[0] + head + tail


@dataclass(frozen=True)
class StreamSettings:
    """Timeouts of a network stream, in seconds."""

    open_timeout_s: float = 10.0  # connecting: the server must answer within this
    read_timeout_s: float = 5.0  # a frame must come within this, or the stream counts as dropped
    reconnect_for_s: float = 30.0  # a dropped live stream is retried for this long, then CameraError
    first_pause_s: float = 0.5  # pause before the first retry; doubled after each failed one ...
    max_pause_s: float = 4.0  # ... up to this
    close_wait_s: float = 0.5  # close() waits this long for a connection attempt, then leaves it to end


class StreamSource(FrameSource):
    """A network stream read through OpenCV's FFmpeg backend (rtsp, rtmp, http(s), tcp, udp).

    Live when the stream announces no frame count (a camera, an MJPEG feed): timestamps are wall
    clock since the first frame, and a drop is reconnected (see StreamSettings), so the run goes
    on with a gap. A file served over HTTP announces its count: it is read like a video file, every
    frame, timestamps index / fps, and its end is the end of the run.
    Raises CameraError (exit 4, as a camera) when it cannot connect or stays lost.
    """

    kind = "stream"

    def __init__(self, url: str, capture_factory: CaptureFactory = cv2.VideoCapture,
                 settings: StreamSettings = StreamSettings()):
        self.url = url  # holds the password: show `description` (masked) instead
        self.settings = settings
        self._cancel = threading.Event()
        quiet_ffmpeg()  # it would name the addresses it tried, at verbose levels the whole URL with its password
        description = mask_url(url)
        started = time.monotonic()
        capture, first = self._connect(capture_factory)
        if capture is None:
            waited = time.monotonic() - started
            if waited >= 0.9 * settings.open_timeout_s:
                raise CameraError(f"no answer from {description} within {settings.open_timeout_s:g} s; "
                                  "check the address and that the camera or server is on")
            raise CameraError(f"cannot connect to {description}: refused, not found, wrong password or not "
                              "a video stream; check the address, port, path and credentials")
        if first is None:
            capture.release()
            raise CameraError(f"connected to {description} but no frame came within "
                              f"{settings.read_timeout_s:g} s; is the camera streaming?")
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        frame_count = int(count) if math.isfinite(count) and count > 0 else None
        height, width = first.shape[:2]
        super().__init__(description, _capture_fps(capture), (width, height), frame_count,
                         is_live=frame_count is None)
        self._factory = capture_factory
        self._capture = capture
        self._pending = first
        self.reconnects = 0  # how often a dropped stream came back
        self._start = time.monotonic()
        self._lost_at = None  # time.monotonic() when the stream dropped, while reconnecting

    def _connect(self, capture_factory: CaptureFactory):
        """One try: (capture, first image), (capture, None) when no frame came, or (None, None)."""
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.settings.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.settings.read_timeout_s * 1000)]
        with _opencv_silenced():
            capture = capture_factory(self.url, cv2.CAP_FFMPEG, params)
            if not capture.isOpened():
                capture.release()
                return None, None
            ok, first = capture.read()
        return capture, (first if ok and first is not None else None)

    def _timestamp(self) -> float:
        if self.is_live:
            return self._live_timestamp()
        return super()._timestamp()

    def _read(self):
        if self._cancel.is_set():  # close() gave up waiting for this thread: it releases the capture
            self._release()
            return None
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image, ""
        with _opencv_silenced():
            ok, image = self._capture.read()
        if ok and image is not None:
            return image, ""
        if not self.is_live:
            if self.frame_count is not None and self.frames_read < self.frame_count - FRAME_COUNT_SLACK:
                log.warning("%s ended after %d of the %d frames it announces (connection cut?)",
                            self.description, self.frames_read, self.frame_count)
            return None
        return self._reconnect()

    def status(self) -> str:
        lost_at = self._lost_at
        if lost_at is None:
            return ""
        return (f"stream lost {time.monotonic() - lost_at:.0f} s ago: reconnecting "
                f"(gives up after {self.settings.reconnect_for_s:g} s)")

    def _reconnect(self):
        """Reopens a dropped live stream with growing pauses; None if closed meanwhile."""
        self._lost_at = time.monotonic()
        try:
            return self._reconnect_from(self._lost_at)
        finally:
            self._lost_at = None

    def _reconnect_from(self, lost_at: float):
        settings = self.settings
        log.warning("%s: stream lost after %d frames; reconnecting (for up to %g s)",
                    self.description, self.frames_read, settings.reconnect_for_s)
        self._capture.release()
        pause = settings.first_pause_s
        while True:
            if self._cancel.wait(pause):
                return None
            capture, first = self._connect(self._factory)
            if self._cancel.is_set():  # closed during the attempt
                if capture is not None:
                    capture.release()
                return None
            if first is not None:
                self._capture = capture
                self.reconnects += 1
                log.warning("%s: reconnected after %.1f s", self.description, time.monotonic() - lost_at)
                return first, ""
            if capture is not None:
                capture.release()
            pause = min(pause * 2, settings.max_pause_s)
            if time.monotonic() - lost_at + pause > settings.reconnect_for_s:
                raise CameraError(f"lost {self.description} after {self.frames_read} frames and could not "
                                  f"reconnect within {settings.reconnect_for_s:g} s; check the camera and "
                                  "the network")

    def _release(self) -> None:
        self._capture.release()

    def interrupt(self) -> None:
        self._cancel.set()  # _reconnect's pause ends at once; the reading thread then ends its iteration

    def close(self) -> None:
        """Like FrameSource.close, but never waits long: a connection attempt in progress (up to
        `open_timeout_s`) is left to finish, and the reading thread then releases it."""
        self._cancel.set()
        if self._lock.acquire(timeout=self.settings.close_wait_s):
            try:
                if not self._closed:
                    self._closed = True
                    self._release()
            finally:
                self._lock.release()


class ImageSource(FrameSource):
    """One image file (folder=False) or a folder of images (sorted by name, not recursive): a
    folder's files that do not decode are skipped with a warning; one image that does not is a
    SourceError."""

    kind = "images"

    def __init__(self, paths: list[Path], description: str, fps: float = DEFAULT_IMAGE_FPS, folder: bool = True):
        self._paths = list(paths)
        if not folder:
            # One image named on the command line: its failure is the run's error, in one line (a
            # "skipping" warning would be followed by an error about the same file).
            first, problem = self._decode_or_why(self._paths[0])
            if first is None:
                raise SourceError(f"cannot read image {self._paths[0]}: {problem}; check the file")
        else:
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

    @property
    def paths(self) -> tuple[Path, ...]:
        """The image files, in reading order (--output into a folder checks their names up front)."""
        return tuple(self._paths)

    @staticmethod
    def _decode_or_why(path: Path) -> tuple[np.ndarray | None, str]:
        """(uint8 BGR image (H, W, 3), "") or (None, why it cannot be read)."""
        # IMREAD_COLOR also applies the EXIF orientation of phone photos and maps gray, alpha and
        # 16-bit files to 8-bit BGR.
        try:
            data = path.read_bytes()
        except OSError as error:
            return None, f"cannot read it ({error.strerror})"
        # libjpeg decodes a JPEG cut short as far as it goes and fills the rest with grey ("Premature
        # end of JPEG file", without a file name): a JPEG must end with its EOI marker, FF D9.
        if path.suffix.lower() in (".jpg", ".jpeg") and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
            return None, "the JPEG is cut short or damaged"
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        return (image, "") if image is not None else (None, "not an image OpenCV can decode")

    @classmethod
    def _decode(cls, path: Path) -> np.ndarray | None:
        """The image, or None after a "skipping" warning (a folder goes on with its other files)."""
        image, problem = cls._decode_or_why(path)
        if image is None:
            log.warning("skipping %s: %s", path, problem)
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
                camera_fps: float | None = None, stream: StreamSettings = StreamSettings()) -> FrameSource:
    """Open a camera index ("0"), a network stream (rtsp://...), a video file, an image file or a
    folder of images.

    A spec made only of digits is a camera index; write "./0" for a file or folder named 0.
    A spec that starts with scheme:// is a URL, never a path: one of STREAM_SCHEMES, or a SourceError.
    Checks the input now (the first frame is decoded) so the run fails before it starts.
    Raises SourceError (missing, empty or undecodable input) or CameraError (no camera, busy, a
    stream that cannot connect). `capture_factory` builds the cv2.VideoCapture for cameras, streams
    and videos (tests pass a fake); `stream`: a network stream's timeouts.
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
    scheme = url_scheme(text)
    if scheme is not None:
        if scheme not in STREAM_SCHEMES:
            raise SourceError(f"cannot read {scheme}:// URLs ({mask_url(text)}); use one of "
                              f"{', '.join(s + '://' for s in STREAM_SCHEMES)} or a local path")
        return StreamSource(text, capture_factory, stream)
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
        return ImageSource([path], str(path), image_fps, folder=False)
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
