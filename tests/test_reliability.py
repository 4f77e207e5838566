"""In-process reliability: a crowd in one frame, frames of every format and size, and demo runs that
end by a camera failing, by Ctrl-C or by the end of the input, with their outputs still whole.

No trained weights: a runner that puts every joint's Gaussian on the crop centre stands in for the
network, so every decoded keypoint must come back on its box centre (in image pixels), whatever the
frame's format, size or crowd.
"""

import json
import threading
import time
import tracemalloc

import cv2
import numpy as np
import pytest

from app.demo import DemoOptions, run
from app.errors import CameraError, OutputError
from app.pipeline import FrameResult, PipelineConfig, PosePipeline
from app.pose import PoseConfig, PoseEstimator
from app.sources import Frame, normalize_frame

INPUT = (256, 192)  # model input (H, W)
HEATMAP = (64, 48)
K = 17


def centre_heatmaps(n: int) -> np.ndarray:
    """(n, 64, 48, K): a sigma-2 Gaussian of peak 1 on the heatmap centre (24, 32), which the crop
    affine sends back to the box centre. Symmetric about column 24, so the flip test keeps it there."""
    ys, xs = np.mgrid[0:HEATMAP[0], 0:HEATMAP[1]]
    gaussian = np.exp(-((xs - HEATMAP[1] / 2) ** 2 + (ys - HEATMAP[0] / 2) ** 2) / 8).astype(np.float32)
    return np.repeat(np.repeat(gaussian[None, :, :, None], K, axis=3), n, axis=0)


class CentreRunner:
    """Runner double: records each call's batch size and answers with `centre_heatmaps`."""

    input_size = INPUT

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert batch.shape[1:] == (*INPUT, 3) and batch.dtype == np.float32
        self.calls.append(len(batch))
        return centre_heatmaps(len(batch))


class ZeroRunner:
    """Runner double that costs nothing but its output, for memory measurements."""

    input_size = INPUT

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((len(batch), *HEATMAP, K), np.float32)


def crowd(n: int, width: int = 1920, height: int = 1080) -> np.ndarray:
    """(n, 4) distinct person boxes, 80 x 300 px, spread over a width x height frame."""
    x = np.linspace(0, width - 80, n)
    y = np.linspace(0, height - 300, n)[::-1]
    return np.stack([x, y, x + 80, y + 300], axis=1).astype(np.float32)


def centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


# --- a crowd in one frame ---------------------------------------------------------------------

@pytest.mark.parametrize("flip, expected_calls", [(False, [32, 28]), (True, [32, 32, 28, 28])])
def test_sixty_people_go_through_in_chunks_of_max_batch(flip, expected_calls):
    frame = np.zeros((1080, 1920, 3), np.uint8)
    boxes = crowd(60)
    runner = CentreRunner()
    result = PoseEstimator(runner, PoseConfig(max_batch=32, flip=flip)).estimate(frame, boxes)
    assert runner.calls == expected_calls
    assert result.keypoints.shape == (60, K, 2) and result.scores.shape == (60, K)
    # Every person's joints on their own box centre: rows stay in box order across the chunks.
    error = np.abs(result.keypoints - centres(boxes)[:, None, :])
    assert error.max() <= 0.05
    np.testing.assert_allclose(result.scores, 1.0, atol=1e-6)


def peak_bytes(estimator: PoseEstimator, frame: np.ndarray, boxes: np.ndarray) -> int:
    """Peak bytes allocated (tracemalloc sees numpy's buffers) during one estimate call."""
    tracemalloc.start()
    try:
        estimator.estimate(frame, boxes)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def crowd_peaks() -> dict[int, int]:
    """Peak bytes of estimate() for crowds of 30, 60 and 120 people, max_batch 32, 1080p frame."""
    frame = np.zeros((1080, 1920, 3), np.uint8)
    estimator = PoseEstimator(ZeroRunner(), PoseConfig(max_batch=32))
    estimator.estimate(frame, crowd(4))  # first-call allocations (cv2, caches) are not the crowd's
    return {n: peak_bytes(estimator, frame, crowd(n)) for n in (30, 60, 120)}


def test_peak_memory_grows_linearly_with_the_crowd_not_faster(crowd_peaks):
    # Measured (2 CPU cores, this venv): 57.6 MB for 30 people, 115 MB for 60, 230 MB for 120.
    assert crowd_peaks[60] <= 2.5 * crowd_peaks[30]
    assert crowd_peaks[120] <= 2.5 * crowd_peaks[60]


FLOAT_CROP_BYTES = INPUT[0] * INPUT[1] * 3 * 4  # one person's normalised float32 crop: 0.59 MB


def test_people_beyond_one_chunk_cost_less_than_their_float_crop(crowd_peaks):
    # With the float batch made one chunk at a time, a person past the first chunk costs only their
    # uint8 crop and heatmaps (measured with that change: 0.38 MB a person from 60 to 120 people).
    per_person = (crowd_peaks[120] - crowd_peaks[60]) / 60
    assert per_person < FLOAT_CROP_BYTES, f"{per_person / 1e6:.2f} MB a person"


# --- frames of every format and size ----------------------------------------------------------

class CentreBoxDetector:
    """One person box over the middle of whatever frame it is given: x 30-70%, y 20-80%."""

    def __init__(self):
        self.calls = 0

    def detect(self, frame):
        self.calls += 1
        height, width = frame.shape[:2]
        box = np.array([[0.3 * width, 0.2 * height, 0.7 * width, 0.8 * height]], np.float32)
        return box, np.array([0.9], np.float32)


def make_pipeline(detect_every: int = 1) -> tuple[PosePipeline, CentreBoxDetector]:
    detector = CentreBoxDetector()
    estimator = PoseEstimator(CentreRunner())
    return PosePipeline(detector, estimator, PipelineConfig(detect_every=detect_every)), detector


def odd_frame(kind: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if kind == "gray":
        return rng.integers(0, 256, (480, 640), dtype=np.uint8)
    if kind == "gray (H, W, 1)":
        return rng.integers(0, 256, (480, 640, 1), dtype=np.uint8)
    if kind == "BGRA":
        return rng.integers(0, 256, (480, 640, 4), dtype=np.uint8)
    if kind == "16-bit":
        return rng.integers(0, 65536, (480, 640, 3), dtype=np.uint16)
    if kind == "float32":
        return rng.random((480, 640, 3), dtype=np.float32)
    if kind == "float64 HDR":
        return rng.uniform(-0.5, 4.0, (480, 640, 3))  # outside [0, 1]: clipped
    if kind == "1x1":
        return np.array([[200]], np.uint8)
    if kind == "8K gray":
        return np.full((4320, 7680), 90, np.uint8)
    raise ValueError(kind)


ODD_FRAMES = ["gray", "gray (H, W, 1)", "BGRA", "16-bit", "float32", "float64 HDR", "1x1", "8K gray"]


@pytest.mark.parametrize("kind", ODD_FRAMES)
def test_any_frame_format_and_size_goes_through_the_pipeline(kind):
    raw = odd_frame(kind)
    frame = normalize_frame(raw)
    height, width = raw.shape[:2]
    assert frame.shape == (height, width, 3) and frame.dtype == np.uint8
    pipeline, detector = make_pipeline()
    for _ in range(3):
        result = pipeline.process(frame)
        assert len(result.people) == 1
        person = result.people[0]
        assert np.isfinite(person.raw_keypoints).all() and np.isfinite(person.smoothed_keypoints).all()
        assert person.visible.all()
        # The centre runner's joints come back on the box centre, in this frame's pixels.
        np.testing.assert_allclose(person.keypoints, np.tile([width / 2, height / 2], (K, 1)), atol=0.05)
    assert detector.calls == 3


SIZES_MID_STREAM = ["gray", "BGRA", "1x1", "float32", "16-bit"]  # 640x480 twice, 1x1, 640x480 twice


def test_a_frame_size_change_mid_stream_starts_over_and_carries_on():
    pipeline, _ = make_pipeline()
    ids = []
    for kind in SIZES_MID_STREAM:
        frame = normalize_frame(odd_frame(kind))
        result = pipeline.process(frame)
        assert len(result.people) == 1
        ids.append(result.people[0].track_id)
        height, width = frame.shape[:2]
        np.testing.assert_allclose(result.people[0].keypoints, np.tile([width / 2, height / 2], (K, 1)), atol=0.05)
        # The old size's track and filter are gone, not left to linger for max_missed frames.
        assert pipeline.state_size() == {"tracks": 1, "smoothers": 1}
    # Frames of one size keep their person's id (BGRA after gray, 16-bit after float).
    assert ids[0] == ids[1] and ids[3] == ids[4]


def test_track_ids_are_never_reused_across_a_reset():
    pipeline, _ = make_pipeline()
    first = [p.track_id for p in pipeline.process(normalize_frame(odd_frame("gray"))).people]
    after = [p.track_id for p in pipeline.process(normalize_frame(odd_frame("1x1"))).people]
    assert first and after
    assert min(after) > max(first)


# --- the demo loop stopped in every way -------------------------------------------------------

N = 7  # frames that reach the outputs
FRAME_SIZE = (64, 48)  # (W, H)


class FakeSource:
    """A frame source (app.sources surface) of `count` frames, then `error` raised, if any.

    handshake: wait for the pipeline to finish each frame before giving the next, so a live source
    (whose reader keeps only the newest frame) drops none and the frame counts are exact.
    """

    def __init__(self, count: int, error: BaseException | None = None, live: bool = False,
                 handshake: threading.Semaphore | None = None):
        self.count = count
        self.error = error
        self.is_live = live
        self.kind = "camera" if live else "video"
        self.fps = 10.0
        self.size = FRAME_SIZE
        self.frame_count = None if live else count
        self.handshake = handshake
        self.iterated = False
        self.closed = False

    def __iter__(self):
        self.iterated = True
        for index in range(self.count):
            if self.handshake is not None and index > 0:
                assert self.handshake.acquire(timeout=10)
            image = np.full((FRAME_SIZE[1], FRAME_SIZE[0], 3), 20 + 30 * (index % 8), np.uint8)
            yield Frame(index, image, index / self.fps)
        if self.error is not None:
            raise self.error

    def close(self):
        self.closed = True


class FakePipeline:
    """process(image, want_heatmaps) -> a FrameResult with nobody; raises KeyboardInterrupt on the
    frame after `interrupt_after` frames, as Ctrl-C would land inside the model call."""

    def __init__(self, interrupt_after: int | None = None, handshake: threading.Semaphore | None = None):
        self.kalman = True
        self.calls = 0
        self.interrupt_after = interrupt_after
        self.interrupted_at: float | None = None
        self.handshake = handshake

    def process(self, image, want_heatmaps=False):
        self.calls += 1
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            self.interrupted_at = time.monotonic()
            raise KeyboardInterrupt
        if self.handshake is not None:
            self.handshake.release()
        return FrameResult(people=[], detected=True, timings_ms={"detect": 0.0})

    def reset(self):
        pass


def run_in_thread(options: DemoOptions, pipeline, source, timeout_s: float = 20.0):
    """Calls app.demo.run in a thread so a hang fails the test instead of stalling the suite.
    Returns (returned value or raised exception, whether it finished, time it finished)."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = run(options, pipeline, source, show=False)
        except BaseException as error:  # KeyboardInterrupt is one of the outcomes under test
            outcome["value"] = error
        outcome["end"] = time.monotonic()

    thread = threading.Thread(target=target, daemon=True, name="demo-run")
    thread.start()
    thread.join(timeout_s)
    # A run that hangs stays behind as a daemon thread polling its empty queue every 0.1 s.
    return outcome.get("value"), not thread.is_alive(), outcome.get("end")


def decoded_frames(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} does not open"
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def assert_outputs_hold_every_frame(video_path, json_path, count: int) -> None:
    frames = decoded_frames(video_path)
    assert len(frames) == count
    assert all(frame.shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3) for frame in frames)
    document = json.loads(json_path.read_text())
    assert [f["frame"] for f in document["frames"]] == list(range(count))
    assert document["fps"] == 10.0 and [document["width"], document["height"]] == list(FRAME_SIZE)


def options_for(tmp_path, video_name: str = "out.mp4") -> DemoOptions:
    return DemoOptions(source="fake", output=str(tmp_path / video_name), json=str(tmp_path / "out.json"),
                       progress=False)


@pytest.mark.parametrize("video_name", ["out.mp4", "out.avi"])
def test_a_camera_that_stops_mid_run_raises_after_closing_whole_outputs(tmp_path, video_name):
    handshake = threading.Semaphore(0)
    source = FakeSource(N, error=CameraError("camera 0 stopped delivering frames after 7"), live=True,
                        handshake=handshake)
    outcome, finished, _ = run_in_thread(options_for(tmp_path, video_name), FakePipeline(handshake=handshake), source)
    assert finished
    assert isinstance(outcome, CameraError) and outcome.exit_code == 4
    assert source.closed
    assert_outputs_hold_every_frame(tmp_path / video_name, tmp_path / "out.json", N)


def test_the_input_ending_returns_the_frame_count_with_whole_outputs(tmp_path):
    source = FakeSource(N)
    outcome, finished, _ = run_in_thread(options_for(tmp_path), FakePipeline(), source)
    assert finished and outcome == N
    assert source.closed
    assert_outputs_hold_every_frame(tmp_path / "out.mp4", tmp_path / "out.json", N)


def test_ctrl_c_inside_the_pipeline_stops_the_run_within_two_seconds_with_whole_outputs(tmp_path):
    source = FakeSource(N + 50)
    pipeline = FakePipeline(interrupt_after=N)
    outcome, finished, end = run_in_thread(options_for(tmp_path), pipeline, source, timeout_s=5.0)
    assert pipeline.interrupted_at is not None
    assert finished, "run() still running 5 s after a KeyboardInterrupt in the pipeline"
    assert isinstance(outcome, KeyboardInterrupt)
    assert end - pipeline.interrupted_at < 2.0
    assert source.closed
    assert_outputs_hold_every_frame(tmp_path / "out.mp4", tmp_path / "out.json", N)


@pytest.mark.parametrize("case", ["missing folder", "existing file"])
def test_outputs_are_checked_before_any_frame_is_read(tmp_path, case):
    existing = tmp_path / "out.json"
    existing.write_text('{"kept": true}')
    if case == "missing folder":
        options = DemoOptions(output=str(tmp_path / "no" / "such" / "out.mp4"), progress=False)
    else:
        options = DemoOptions(output=str(tmp_path / "out.mp4"), json=str(existing), progress=False)
    source, pipeline = FakeSource(N), FakePipeline()
    with pytest.raises(OutputError) as error:
        run(options, pipeline, source, show=False)
    assert error.value.exit_code == 7 and "\n" not in str(error.value)
    assert not source.iterated and pipeline.calls == 0
    assert existing.read_text() == '{"kept": true}'  # not truncated by an output opened too early
    assert not (tmp_path / "out.mp4").exists()
