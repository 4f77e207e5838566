"""Sources: each input kind, each way an input can be broken, frame normalisation, camera threading."""

import logging
import threading

import cv2
import numpy as np
import pytest

from app.errors import CameraError, SourceError
from app.sources import CameraSource, LatestFrameReader, normalize_frame, open_source


class FakeCapture:
    """Stands in for cv2.VideoCapture: returns `frames` in order, then failed reads.

    A frame given as None is a failed read (a camera hiccup). `gate`, if set, is waited on before
    every read after the first, so a test can hold the camera back.
    """

    def __init__(self, frames=(), opened=True, fps=0.0, frame_count=-1, gate=None, forever=False):
        self.frames = list(frames)
        self.opened = opened
        self.fps = fps
        self.frame_count = frame_count
        self.gate = gate
        self.forever = forever
        self.reads = 0
        self.released = False
        self.exhausted = threading.Event()

    def isOpened(self):
        return self.opened

    def read(self):
        if self.gate is not None and self.reads > 0:
            self.gate.wait()
        self.reads += 1
        if self.forever:
            return True, np.full((4, 6, 3), self.reads % 256, np.uint8)
        if not self.frames:
            self.exhausted.set()
            return False, None
        frame = self.frames.pop(0)
        return (frame is not None), frame

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_COUNT: self.frame_count}.get(prop, 0.0)

    def set(self, prop, value):
        """What was asked of the camera; like a real one, it keeps its own mode (frames, fps)."""
        self.asked = {**getattr(self, "asked", {}), prop: value}
        return True

    def release(self):
        self.released = True


def gray_frames(count, shape=(4, 6)):
    return [np.full(shape, i, np.uint8) for i in range(count)]


# --- broken inputs ---------------------------------------------------------------------------

def test_missing_path_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        open_source(tmp_path / "nope.mp4")


def test_zero_byte_file_is_a_source_error(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(SourceError, match="empty file"):
        open_source(tmp_path / "empty.mp4")


def test_text_named_mp4_is_a_source_error(tmp_path):
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    with pytest.raises(SourceError, match="cannot decode video"):
        open_source(tmp_path / "notes.mp4")


def test_folder_without_images_is_a_source_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError, match="has no images"):
        open_source(tmp_path)


def test_folder_of_only_corrupt_images_is_a_source_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8 broken jpeg")
    with pytest.raises(SourceError, match="no readable image"):
        open_source(tmp_path)


@pytest.mark.parametrize(("content", "why"), [
    (b"\xff\xd8 broken jpeg", "the JPEG is cut short or damaged"),
    (b"\xff\xd8 not a jpeg at all \xff\xd9", "not an image OpenCV can decode"),
])
def test_one_unreadable_image_is_one_error_naming_why_and_no_warning(tmp_path, caplog, content, why):
    (tmp_path / "a.jpg").write_bytes(content)
    with caplog.at_level("WARNING"), pytest.raises(SourceError) as error:
        open_source(tmp_path / "a.jpg")
    assert str(error.value) == f"cannot read image {tmp_path / 'a.jpg'}: {why}; check the file"
    assert caplog.records == []  # not "skipping a.jpg" and then an error about the same file


def test_errors_are_one_line(tmp_path):
    with pytest.raises(SourceError) as error:
        open_source(tmp_path / "nope.avi")
    assert "\n" not in str(error.value)


# --- images -----------------------------------------------------------------------------------

def test_folder_skips_corrupt_images_with_a_warning(tmp_path, caplog):
    for i, name in enumerate(["a.png", "c.png", "d.JPG"]):
        cv2.imwrite(str(tmp_path / name), np.full((20 + i, 30, 3), 50 * i, np.uint8))
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    with caplog.at_level(logging.WARNING, logger="app.sources"), open_source(tmp_path, image_fps=2.0) as source:
        frames = list(source)
    assert [f.name for f in frames] == ["a.png", "c.png", "d.JPG"]
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.timestamp_s for f in frames] == [0.0, 0.5, 1.0]
    assert [f.image.shape for f in frames] == [(20, 30, 3), (21, 30, 3), (22, 30, 3)]  # sizes pass through
    assert source.size == (30, 20) and source.fps == 2.0 and source.kind == "images"
    assert sum("b.jpg" in r.getMessage() for r in caplog.records) == 1


def test_single_image(tmp_path):
    path = tmp_path / "gray.png"
    cv2.imwrite(str(path), np.full((7, 5), 200, np.uint8))  # grayscale file
    with open_source(path) as source:
        frames = list(source)
    assert len(frames) == 1 and source.frame_count == 1 and not source.is_live
    assert frames[0].image.shape == (7, 5, 3) and frames[0].image.dtype == np.uint8
    assert (frames[0].image == 200).all()


# --- videos -----------------------------------------------------------------------------------

def count_decodable_frames(path):
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def test_real_video_yields_every_frame(dancer_video, caplog):
    expected = count_decodable_frames(dancer_video)
    with caplog.at_level(logging.WARNING, logger="app.sources"), open_source(dancer_video) as source:
        assert source.fps == 25.0 and source.size == (518, 496) and source.kind == "video"
        indexes = [frame.index for frame in source]
    assert indexes == list(range(expected)) and expected > 1500
    assert not [r for r in caplog.records if r.name == "app.sources"]  # a complete file: no cut-off warning despite the header's +1 estimate


def test_cut_off_video_yields_what_it_has_and_warns(dancer_video, tmp_path, caplog):
    cut = tmp_path / "cut.avi"
    data = dancer_video.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="app.sources"), open_source(cut) as source:
        frames = list(source)
    assert 100 < len(frames) < source.frame_count - 100
    assert frames[-1].timestamp_s == pytest.approx((len(frames) - 1) / 25.0)
    assert any("ended after" in r.getMessage() for r in caplog.records)


def test_video_frames_are_normalised_and_size_changes_pass_through(tmp_path):
    path = tmp_path / "fake.mp4"
    path.write_bytes(b"stands in for a file; the fake capture makes the frames")
    frames = [np.zeros((4, 6), np.uint16), np.zeros((9, 3, 4), np.uint8), np.zeros((2, 2, 3), np.float32)]
    capture = FakeCapture(frames, fps=12.0, frame_count=3)
    with open_source(path, capture_factory=lambda _: capture) as source:
        shapes = [frame.image.shape for frame in source]
        assert source.size == (6, 4)
    assert shapes == [(4, 6, 3), (9, 3, 3), (2, 2, 3)]
    assert capture.released


# --- cameras ----------------------------------------------------------------------------------

def test_camera_that_does_not_open_is_a_camera_error():
    with pytest.raises(CameraError, match="cannot open camera 3"):
        open_source("3", capture_factory=lambda index: FakeCapture(opened=False))


def test_camera_without_a_first_frame_is_a_camera_error():
    capture = FakeCapture([])
    with pytest.raises(CameraError, match="sent no frame"):
        open_source("0", camera_timeout_s=0.2, capture_factory=lambda index: capture)
    assert capture.released and capture.reads >= 2  # it kept trying until the deadline


def test_camera_reports_live_and_a_default_rate():
    with open_source("0", capture_factory=lambda index: FakeCapture(gray_frames(1), fps=0.0)) as source:
        assert source.is_live and source.frame_count is None and source.fps == 30.0
        assert source.size == (6, 4) and source.kind == "camera"


def test_camera_size_and_rate_are_asked_and_what_it_gave_is_reported():
    capture = FakeCapture(gray_frames(2), fps=30.0)
    with open_source("0", capture_factory=lambda index: capture, camera_size=(1280, 720), camera_fps=60) as source:
        # MJPG first: V4L2 offers the large sizes of most webcams in MJPG only, and picks the size
        # among the modes of the format in force when the size is set.
        assert list(capture.asked.items()) == [(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG")),
                                               (cv2.CAP_PROP_FRAME_WIDTH, 1280), (cv2.CAP_PROP_FRAME_HEIGHT, 720),
                                               (cv2.CAP_PROP_FPS, 60)]
        assert source.requested == ((1280, 720), 60)
        assert source.size == (6, 4) and source.fps == 30.0  # what the camera gave, not what was asked
        assert source.fourcc == ""  # this camera reports no format


def test_camera_reports_the_format_it_granted():
    capture = FakeCapture(gray_frames(1))
    capture.get = lambda prop: float(cv2.VideoWriter_fourcc(*"YUYV")) if prop == cv2.CAP_PROP_FOURCC else 0.0
    with open_source("0", capture_factory=lambda index: capture, camera_size=(1920, 1080)) as source:
        assert source.fourcc == "YUYV"  # a camera without MJPG keeps its own format


def test_camera_asks_no_format_for_a_rate_alone():
    capture = FakeCapture(gray_frames(1))
    with open_source("0", capture_factory=lambda index: capture, camera_fps=15) as source:
        assert capture.asked == {cv2.CAP_PROP_FPS: 15} and source.requested == (None, 15)


def test_camera_asks_nothing_unless_told():
    capture = FakeCapture(gray_frames(1))
    with open_source("0", capture_factory=lambda index: capture) as source:
        assert not hasattr(capture, "asked") and source.requested == (None, None)


def test_camera_survives_a_few_failed_reads_then_raises_when_it_stops():
    frames = gray_frames(2) + [None, None] + gray_frames(3)  # a hiccup shorter than the grace
    capture = FakeCapture(frames)
    source = CameraSource(0, lambda index: capture, max_failed_reads=3, retry_pause_s=0.0)
    received = []
    with pytest.raises(CameraError, match="stopped delivering frames after 5"):
        for frame in source:
            received.append(frame)
    assert [f.index for f in received] == [0, 1, 2, 3, 4]
    assert all(f.image.shape == (4, 6, 3) for f in received)
    source.close()
    source.close()  # idempotent
    assert capture.released


def test_latest_frame_reader_drops_stale_frames_and_reraises_camera_errors():
    gate = threading.Event()
    capture = FakeCapture(gray_frames(50), gate=gate)
    source = CameraSource(0, lambda index: capture, max_failed_reads=2, retry_pause_s=0.0)
    with LatestFrameReader(source) as reader:
        frames = iter(reader)
        first = next(frames)  # the camera is held back after frame 0, so nothing is dropped yet
        gate.set()
        assert capture.exhausted.wait(5.0)  # the other 49 frames arrived while we were "busy"
        newest = next(frames)
        with pytest.raises(CameraError):
            next(frames)
    assert (first.index, newest.index) == (0, 49)
    assert reader.dropped == 48
    assert capture.released


def test_latest_frame_reader_close_stops_a_running_camera():
    capture = FakeCapture(forever=True)
    source = CameraSource(0, lambda index: capture)
    reader = LatestFrameReader(source)
    indexes = [frame.index for _, frame in zip(range(3), reader)]
    reader.close()
    assert indexes == sorted(set(indexes))  # newest-only, never backwards
    assert capture.released and not reader._thread.is_alive()


# --- normalize_frame --------------------------------------------------------------------------

@pytest.mark.parametrize("image", [
    np.full((3, 4), 7, np.uint8),
    np.full((3, 4, 1), 7, np.uint8),
    np.full((3, 4), 7 * 256 + 255, np.uint16),  # >> 8 keeps the top byte
    np.full((3, 4, 4), 7, np.uint8),
    np.full((3, 4, 3), 7 / 255, np.float32),
    np.full((3, 4, 3), 7 / 255, np.float64),
])
def test_normalize_frame_makes_uint8_bgr(image):
    out = normalize_frame(image)
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert (out == 7).all()


def test_normalize_frame_keeps_bgra_colour_order_and_clips_floats():
    bgra = np.zeros((1, 1, 4), np.uint8)
    bgra[0, 0] = (10, 20, 30, 0)  # alpha is dropped, not blended
    assert normalize_frame(bgra)[0, 0].tolist() == [10, 20, 30]
    floats = np.array([[[-0.5, 0.5, 2.0]]], np.float32)
    assert normalize_frame(floats)[0, 0].tolist() == [0, 128, 255]


def test_normalize_frame_does_not_copy_a_ready_8k_frame():
    frame = np.zeros((4320, 7680, 3), np.uint8)
    assert normalize_frame(frame) is frame
    strided = frame[::2, ::2]
    out = normalize_frame(strided)
    assert out.flags.c_contiguous and out.shape == (2160, 3840, 3)


def test_normalize_frame_one_pixel():
    assert normalize_frame(np.array([[9]], np.uint8)).tolist() == [[[9, 9, 9]]]


@pytest.mark.parametrize("image", [
    np.zeros((0, 4, 3), np.uint8),
    np.zeros((3, 4, 2), np.uint8),
    np.zeros((3, 4, 3), np.int32),
    np.zeros((2, 3, 4, 3), np.uint8),
])
def test_normalize_frame_rejects_what_it_cannot_convert(image):
    with pytest.raises(SourceError):
        normalize_frame(image)


def test_real_capture_with_no_camera_at_that_index_is_a_camera_error():
    with pytest.raises(CameraError, match="cannot open camera 97"):
        open_source("97", camera_timeout_s=0.5)  # real cv2.VideoCapture; no machine has 98 cameras


def test_startup_line_names_the_size_and_format_a_camera_granted_beside_what_was_asked():
    import run_demo

    capture = FakeCapture(gray_frames(1), fps=30.0)
    capture.get = lambda prop: {cv2.CAP_PROP_FOURCC: float(cv2.VideoWriter_fourcc(*"MJPG")),
                                cv2.CAP_PROP_FPS: 30.0}.get(prop, 0.0)
    with open_source("0", capture_factory=lambda index: capture, camera_size=(1280, 720)) as source:
        assert run_demo._describe(source) == "camera 0: 6x4 at 30 fps MJPG (asked for 1280x720)"


def test_startup_line_counts_images_and_frames_in_the_singular_for_one(tmp_path):
    import run_demo

    for count in (1, 2):
        folder = tmp_path / f"photos{count}"
        folder.mkdir()
        for i in range(count):
            cv2.imwrite(str(folder / f"{i}.png"), np.full((8, 6, 3), 90, np.uint8))
        with open_source(folder) as source:
            assert run_demo._describe(source).endswith(f"6x8 at 1 fps, {count} image{'s' if count > 1 else ''}")
    with open_source(folder / "0.png") as source:
        assert run_demo._describe(source).endswith(", 1 image")


def test_live_frames_that_arrive_together_get_strictly_increasing_times():
    # A stream's buffered frames come out back to back after a connect: their times must still
    # increase, in the JSON's milliseconds too (app.outputs rounds time_s to 3 decimals).
    import time

    from app.sources import FrameSource

    source = FrameSource("a stream", 10.0, (64, 48), None, is_live=True)
    source._start = time.monotonic()
    stamps = [source._live_timestamp() for _ in range(50)]  # far faster than 1 ms apart
    assert all(round(b, 3) > round(a, 3) for a, b in zip(stamps, stamps[1:]))
    time.sleep(0.05)
    later = source._live_timestamp()
    assert later >= 0.05 and later - stamps[-1] >= 0.001  # real time again once frames are apart
