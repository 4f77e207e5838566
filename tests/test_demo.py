"""run_demo.py end to end: the real detector on the real dancer video, a SimpleBaseline with random
weights (built here: the product never runs untrained weights by default), headless, writing a video
and a JSON; and the one-line errors with their exit statuses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import run_demo
from app import weights as weights_module
from app.errors import EXIT_INTERRUPTED, MissingWeightsError

ROOT = Path(__file__).resolve().parents[1]


def demo_command(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "run_demo.py"), "--headless", "--no-progress", *args]


def demo_env() -> dict:
    env = dict(os.environ, YOLO_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("DISPLAY", None)
    return env


def video_frames(path: Path) -> tuple[int, float, tuple[int, int]]:
    """Frames that actually decode, the frame rate and (W, H) of a video file."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count, fps, size


def test_demo_on_dancer_video_writes_every_frame_and_one_track(tmp_path, dancer_video, detector_path,
                                                               random_mobilenet_weights):
    out_video, out_json = tmp_path / "out.mp4", tmp_path / "out.json"
    # --detect-every 1: with random weights the keypoints mean nothing, so boxes must not be derived
    # from them; the detector and tracker alone decide the track id here. The MobileNetV2 head: 1,571
    # frames of the R50 took 120 s of the suite, the network's values play no part here.
    completed = subprocess.run(
        demo_command("--source", str(dancer_video), "--weights", str(random_mobilenet_weights), "--detector",
                     str(detector_path), "--detect-every", "1",
                     "--output", str(out_video), "--json", str(out_json)),
        cwd=tmp_path, env=demo_env(), capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr

    in_count, in_fps, in_size = video_frames(dancer_video)
    out_count, out_fps, out_size = video_frames(out_video)
    assert out_count == in_count
    assert out_fps == pytest.approx(in_fps, abs=0.01)
    assert out_size == in_size

    document = json.loads(out_json.read_text())
    frames = document["frames"]
    assert len(frames) == in_count
    assert [f["frame"] for f in frames] == list(range(in_count))
    with_person = [f for f in frames if f["people"]]
    assert len(with_person) >= 0.95 * in_count
    track_ids = {p["track_id"] for f in frames for p in f["people"]}
    assert len(track_ids) == 1, f"the one dancer got track ids {sorted(track_ids)}"
    person = with_person[0]["people"][0]
    assert len(person["keypoints"]) == 17 * 3 and len(person["bbox"]) == 4
    assert "untrained" in completed.stderr.lower()  # the demo says so when the weights say so


def test_max_people_caps_the_people_on_the_street(tmp_path, street_video, detector_path, random_weights):
    out_json = tmp_path / "out.json"
    completed = subprocess.run(
        demo_command("--source", str(street_video), "--weights", str(random_weights), "--detector",
                     str(detector_path), "--detect-every", "1", "--max-people", "2", "--max-frames", "10",
                     "--json", str(out_json)),
        cwd=tmp_path, env=demo_env(), capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    people = [len(frame["people"]) for frame in json.loads(out_json.read_text())["frames"]]
    assert len(people) == 10
    assert max(people) == 2  # the street has 5-20 walkers a frame (tests/test_detector.py)


def test_max_people_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_demo.parse_args(["--max-people", "0"])
    assert exit_info.value.code == 2
    assert "--max-people: must be 1 or more, got 0" in capsys.readouterr().err


def test_ctrl_c_closes_outputs_and_exits_fast(tmp_path, dancer_video, detector_path, random_weights):
    out_video, out_json = tmp_path / "out.avi", tmp_path / "out.json"
    process = subprocess.Popen(
        demo_command("--source", str(dancer_video), "--weights", str(random_weights), "--detector",
                     str(detector_path), "--detector-size", "320", "--output", str(out_video),
                     "--json", str(out_json)),
        cwd=tmp_path, env=demo_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell without job control starts background jobs with SIGINT ignored, and an ignored
        # signal stays ignored across exec: then Python installs no Ctrl-C handler and the demo would
        # (rightly, as under nohup) run to the end. The test is about Ctrl-C, so the child gets it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if out_json.exists() and out_json.stat().st_size > 20_000:  # some frames written
                break
            time.sleep(0.2)
        assert process.poll() is None, process.stderr.read()[-2000:]
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        process.wait(timeout=30)
        exit_seconds = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()
    assert process.returncode == EXIT_INTERRUPTED, stderr[-2000:]
    assert "Traceback" not in stderr
    assert exit_seconds < 1.0, f"took {exit_seconds:.2f} s to exit after Ctrl-C"
    frames_written = len(json.loads(out_json.read_text())["frames"])
    assert frames_written > 0
    video_count, _, _ = video_frames(out_video)
    assert video_count >= frames_written - 8  # frames in flight when the signal came may be in one, not both


def run_main(capsys, *args: str) -> tuple[int, str]:
    code = run_demo.main(["--headless", "--no-progress", *args])
    return code, capsys.readouterr().err


def assert_one_line(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr


def a_still_image(folder: Path) -> Path:
    path = folder / "still.jpg"
    cv2.imwrite(str(path), np.full((64, 48, 3), 255, np.uint8))
    return path


def test_no_trained_weights_exits_10_naming_both_commands(capsys, monkeypatch, tmp_path, detector_path):
    monkeypatch.setattr(weights_module, "WEIGHTS_DIR", tmp_path)  # an empty weights/ folder
    code, stderr = run_main(capsys, "--source", str(a_still_image(tmp_path)), "--detector", str(detector_path))
    assert code == MissingWeightsError.exit_code == 10  # not 2, argparse's code for a bad command line
    assert_one_line(stderr)
    assert "python -m app.weights download" in stderr and "python -m app.weights convert" in stderr


def test_no_trained_weights_as_a_user_sees_it(tmp_path, detector_path):
    completed = subprocess.run(demo_command("--weights", str(tmp_path / "none.weights.h5"), "--source",
                                            str(a_still_image(tmp_path)), "--detector", str(detector_path)),
                               cwd=tmp_path, env=demo_env(), capture_output=True, text=True, timeout=120)
    assert completed.returncode == MissingWeightsError.exit_code
    assert completed.stderr.strip().count("\n") == 0, completed.stderr  # exactly one line
    assert completed.stderr.startswith("error: ")


@pytest.mark.parametrize("case, expected", [
    ("missing source", 3),
    ("no camera", 4),
    ("missing output folder", 7),
    ("existing output", 7),
    ("unreadable detector", 6),
    ("truncated weights", 5),
])
def test_bad_input_gives_one_line_and_its_exit_status(case, expected, capsys, tmp_path, random_weights, detector_path):
    args = ["--weights", str(random_weights), "--detector", str(detector_path), "--source", str(tmp_path)]
    (tmp_path / "a.jpg").write_bytes(cv2.imencode(".jpg", 255 * __import__("numpy").ones((64, 48, 3), "uint8"))[1])
    if case == "missing source":
        args[-1] = str(tmp_path / "nothing.mp4")
    elif case == "no camera":
        args[-1] = "9"  # no /dev/video9 here, nor on a user's laptop
    elif case == "missing output folder":
        args += ["--output", str(tmp_path / "no" / "such" / "out.mp4")]
    elif case == "existing output":
        (tmp_path / "out.json").write_text("{}")
        args += ["--json", str(tmp_path / "out.json")]
    elif case == "unreadable detector":
        garbage = tmp_path / "garbage.tflite"
        garbage.write_bytes(b"not a model" * 100)
        args[3] = str(garbage)
    elif case == "truncated weights":
        cut = tmp_path / "cut.weights.h5"
        cut.write_bytes(random_weights.read_bytes()[:100_000])
        weights_module.sidecar_path(cut).write_text(weights_module.sidecar_path(random_weights).read_text())
        args[1] = str(cut)
    code, stderr = run_main(capsys, *args)
    assert code == expected, stderr
    assert_one_line(stderr)


# --- the window's behaviour, with a stand-in window (tests/test_window.py runs the real one) ----

from app import demo as demo_module  # noqa: E402
from app.demo import DemoOptions, ViewState, _interact, mirror_result  # noqa: E402
from app.pipeline import FrameResult, Person  # noqa: E402
from app.sources import Frame  # noqa: E402


class ScriptedWindow:
    """Stands in for app.window.Window: wait_key returns the scripted keys, then 255 (no key);
    `close_after` waits later the user closes it."""

    def __init__(self, keys=(), close_after=None):
        self.keys = [ord(k) if isinstance(k, str) else k for k in keys]
        self.close_after = close_after
        self.waits = 0
        self.shown = []

    def wait_key(self, delay_ms):
        self.waits += 1
        return self.keys.pop(0) if self.keys else 255

    def closed(self):
        return self.close_after is not None and self.waits >= self.close_after

    def show(self, image):
        self.shown.append(image)

    def resized(self):
        return self.waits in self.resize_at

    resize_at = ()  # waits after which the user has resized the window


class Toggle:
    kalman = True


def interact(window, state=None, hold_s=None, timeout_s=5.0):
    state = state or ViewState()
    pipeline = Toggle()
    redraws = []
    start = time.monotonic()
    # A scripted window never blocks, so a wait that never ends would spin: bound it.
    original = window.wait_key

    def wait_key(delay_ms):
        assert time.monotonic() - start < timeout_s, "_interact never returned"
        time.sleep(delay_ms / 1000)
        return original(delay_ms)

    window.wait_key = wait_key
    _interact(window, state, pipeline, lambda: redraws.append(pipeline.kalman) or "image", hold_s)
    return state, pipeline, redraws, time.monotonic() - start


def test_pause_waits_and_every_toggle_redraws_the_paused_frame():
    window = ScriptedWindow([" ", 255, "k", 255, 255, "k", " "])
    state, pipeline, redraws, _ = interact(window)
    assert redraws == [True, False, True, True]  # pause, k, k, play: each redrawn at once
    assert window.shown == ["image"] * 4
    assert not state.paused and not state.quit and window.waits == 7


def test_closing_the_window_while_paused_quits():
    state, _, _, seconds = interact(ScriptedWindow(close_after=5), ViewState(paused=True))
    assert state.quit and seconds < 1.0


def test_a_video_frame_goes_on_at_once():
    window = ScriptedWindow()
    state, _, redraws, _ = interact(window)
    assert window.waits == 1 and redraws == [] and not state.quit


def test_a_still_image_waits_for_a_key_that_changes_nothing():
    window = ScriptedWindow([255] * 20 + ["k"] + [255] * 5 + [13])
    state, pipeline, redraws, _ = interact(window, hold_s=0.0)
    assert window.waits == 27  # waited through 20 empty looks and the k, left on Enter
    assert redraws == [False] and not state.quit


def test_a_still_image_goes_on_after_the_image_delay_unless_paused():
    _, _, _, seconds = interact(ScriptedWindow(), hold_s=0.3)
    assert 0.3 <= seconds < 1.0
    window = ScriptedWindow(close_after=60)
    state, _, _, seconds = interact(window, ViewState(paused=True), hold_s=0.1)
    assert state.quit and seconds > 0.5  # paused: stayed past the delay until the window closed


def test_a_paused_frame_is_redrawn_at_the_windows_new_size():
    window = ScriptedWindow([" ", 255, 255, 255, 255, " "])
    window.resize_at = (3,)
    state, _, redraws, _ = interact(window)
    assert redraws == [True, True, True]  # pause, the resize, play
    assert not state.paused


def test_previews_while_the_offline_smoother_fills_then_every_frame_smoothed_once():
    """A window shows the first frames at once (Preview, not written) while the offline smoother
    holds them; then the smoothed pairs follow, every frame once, in order, from frame 0."""
    import queue
    import threading

    from app.offline import FixedLagStage

    frames, results = queue.Queue(), queue.Queue()
    for index in range(12):
        frames.put(Frame(index, np.full((48, 64, 3), 40, np.uint8), index / 10))
    frames.put(demo_module._END)
    stage = FixedLagStage(25.0, lag=5)
    demo_module._inference(OnePersonPipeline(), frames, results, threading.Event(), threading.Event(), False,
                           stage, previews=True)
    out = [results.get_nowait() for _ in range(results.qsize())]
    assert out[-1] is demo_module._END
    previews = [item for item in out if isinstance(item, demo_module.Preview)]
    pairs = [item for item in out[:-1] if not isinstance(item, demo_module.Preview)]
    assert [p.frame.index for p in previews] == [0, 1, 2, 3, 4]  # at once, while it fills
    assert [p.held for p in previews] == [1, 2, 3, 4, 5] and {p.lag for p in previews} == {5}
    assert out[0] is previews[0] and out[5] is pairs[0]  # the first smoothed frame follows them
    assert [frame.index for frame, _ in pairs] == list(range(12))
    # Without a window, no previews.
    frames.put(Frame(0, np.full((48, 64, 3), 40, np.uint8), 0.0))
    frames.put(demo_module._END)
    demo_module._inference(OnePersonPipeline(), frames, results, threading.Event(), threading.Event(), False,
                           FixedLagStage(25.0, lag=5))
    assert not any(isinstance(results.get_nowait(), demo_module.Preview) for _ in range(results.qsize()))


def person_at(x: float) -> Person:
    keypoints = np.tile([[x, 20.0]], (17, 1))
    return Person(track_id=1, box=np.array([10.0, 5.0, 30.0, 50.0]), box_score=0.9, raw_keypoints=keypoints,
                  smoothed_keypoints=keypoints + 1, scores=np.full(17, 0.9), visible=np.ones(17, bool), kalman=True)


def test_mirror_moves_positions_only():
    heatmaps = np.zeros((1, 8, 6, 17), np.float32)
    heatmaps[0, 2, 1, 9] = 1.0  # left wrist's peak near the left edge
    result = FrameResult(people=[person_at(10.0)], detected=True, timings_ms={}, heatmaps=heatmaps)
    mirrored = mirror_result(result, width=100)
    person = mirrored.people[0]
    np.testing.assert_allclose(person.raw_keypoints[:, 0], 89.0)  # pixel 10 -> pixel 89 under cv2.flip
    np.testing.assert_allclose(person.smoothed_keypoints[:, 0], 88.0)
    np.testing.assert_allclose(person.box, [70.0, 5.0, 90.0, 50.0])
    assert mirrored.heatmaps[0, 2, 4, 9] == 1.0  # same joint channel (anatomical), mirrored position
    assert result.people[0].raw_keypoints[0, 0] == 10.0  # the result itself is untouched (JSON)


class OnePersonSource:
    kind, is_live, fps, size, frame_count = "camera", True, 10.0, (64, 48), None

    def __init__(self, count=3):
        self.count = count

    def __iter__(self):
        for index in range(self.count):
            yield Frame(index, np.full((48, 64, 3), 40, np.uint8), index / 10)

    def close(self):
        pass


class OnePersonPipeline:
    kalman = True

    def process(self, image, want_heatmaps=False):
        return FrameResult(people=[person_at(10.0)], detected=True, timings_ms={"detect": 0.0})

    def reset(self):
        pass


class ReconnectingSource(OnePersonSource):
    """A live stream that drops after its first frame and is back 0.6 s later, saying so meanwhile."""

    def __init__(self):
        super().__init__(count=2)
        self.note = ""

    def status(self):
        return self.note

    def __iter__(self):
        yield Frame(0, np.full((48, 64, 3), 40, np.uint8), 0.0)
        for seconds in range(3):
            self.note = f"stream lost {seconds} s ago: reconnecting"
            time.sleep(0.2)
        self.note = ""
        yield Frame(1, np.full((48, 64, 3), 40, np.uint8), 0.7)


def test_the_window_says_a_stream_is_reconnecting_over_its_last_frame(monkeypatch):
    drawn = []

    def fake_draw(frame, result, state, kalman, fps, threshold, mirror, record, view, runs_on="", size=None,
                  banner=""):
        drawn.append((frame.index, banner))
        return None, np.full((48, 64, 3), 200, np.uint8)

    class Window(ScriptedWindow):
        def __init__(self, name, size, screen):
            super().__init__()

        def drawing_size(self):
            return (64, 48)

        def destroy(self):
            pass

    monkeypatch.setattr(demo_module, "_draw", fake_draw)
    monkeypatch.setattr(demo_module, "Window", Window)
    options = DemoOptions(source="rtsp://camera", progress=False)
    assert demo_module.run(options, OnePersonPipeline(), ReconnectingSource(), show=True) == 2
    # Frame 0, then frame 0 again under each of the three notes, then frame 1 as it is.
    assert drawn == [(0, ""), (0, "stream lost 0 s ago: reconnecting"), (0, "stream lost 1 s ago: reconnecting"),
                     (0, "stream lost 2 s ago: reconnecting"), (1, "")]


@pytest.mark.parametrize("record_view", [False, True])
def test_output_records_the_annotated_frame_or_exactly_the_view(tmp_path, monkeypatch, record_view):
    """--output: the recorded picture; --record-view: what the window shows, letterboxed into the
    first view's size when the view grows (e.g. side by side)."""
    def fake_draw(frame, result, state, kalman, fps, threshold, mirror, record, view, runs_on="", size=None,
                  banner=""):
        recorded = np.full((48, 64, 3), 60, np.uint8) if record else None
        shown = np.full((48, 64 * (1 + frame.index % 2), 3), 200, np.uint8) if view else None  # odd frames twice as wide
        return recorded, shown

    monkeypatch.setattr(demo_module, "_draw", fake_draw)
    options = DemoOptions(source="0", output=str(tmp_path / "out.avi"), json=str(tmp_path / "out.json"),
                          progress=False, record_view=record_view)
    assert demo_module.run(options, OnePersonPipeline(), OnePersonSource(), show=False) == 3
    capture = cv2.VideoCapture(str(tmp_path / "out.avi"))
    frames = [capture.read()[1] for _ in range(3)]
    assert all(frame.shape == (48, 64, 3) for frame in frames)
    if record_view:
        assert abs(int(frames[0][24, 32, 0]) - 200) < 8
        assert frames[1][:10].max() < 8 and abs(int(frames[1][24, 32, 0]) - 200) < 8  # letterboxed
    else:
        assert all(abs(int(frame[24, 32, 0]) - 60) < 8 for frame in frames)
    # The JSON stays in the camera's coordinates, mirror or not (a camera is mirrored by default).
    document = json.loads((tmp_path / "out.json").read_text())
    assert document["frames"][0]["people"][0]["keypoints"][0] == 11.0  # smoothed x, not 100 - 1 - 11


def test_camera_and_window_options_parse():
    args = run_demo.parse_args(["--camera-size", "1280x720", "--camera-fps", "60", "--no-mirror",
                                "--record-view", "--image-delay", "2.5"])
    assert args.camera_size == (1280, 720) and args.camera_fps == 60.0 and args.mirror is False
    assert args.record_view and args.image_delay == 2.5
    assert run_demo.parse_args([]).mirror is None  # decided by the source: cameras mirror


@pytest.mark.parametrize("bad", [["--camera-size", "1280"], ["--camera-size", "0x720"], ["--camera-fps", "0"],
                                 ["--image-delay", "-1"]])
def test_bad_camera_and_window_options_exit_2(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_demo.parse_args(bad)
    assert exit_info.value.code == 2


def test_a_missing_camera_fails_fast_without_loading_the_networks(tmp_path, random_weights):
    """The source is opened before TensorFlow, Ultralytics and the models load."""
    start = time.monotonic()
    completed = subprocess.run(demo_command("--weights", str(random_weights), "--source", "9"), cwd=tmp_path,
                               env=demo_env(), capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - start
    assert completed.returncode == 4
    assert [line for line in completed.stderr.splitlines() if not line.startswith("warning:")] == [
        "error: cannot open camera 9: no camera at that index, or it is in use"], completed.stderr
    assert seconds < 5.0, f"{seconds:.1f} s"  # 0.5 s here; the models alone take 10 s to load


class FileSource(OnePersonSource):
    """A video file's surface (read in order, never dropped) with `count` frames of 64 x 48."""

    kind, is_live, fps, size = "video", False, 25.0, (64, 48)

    @property
    def frame_count(self):
        return self.count


def test_the_writer_thread_writes_every_frame_in_order_while_the_disk_is_slow(tmp_path, monkeypatch):
    # The writer stalls on its first frame until the queue is full: the run waits (put blocks)
    # instead of dropping or piling up frames, and then every frame reaches the video and the JSON,
    # in order.
    import threading

    full = threading.Event()

    def slow_draw(frame, result, state, kalman, fps, threshold, mirror, record, view, runs_on="", size=None, banner=""):
        if record:  # the writer's drawing (the main thread draws only the view)
            full.wait(timeout=10)
        return (np.full((48, 64, 3), 4 * frame.index, np.uint8) if record else None), None

    waiting = []
    original_put = demo_module.OutputWriter.put

    def put(self, item):
        waiting.append(self._queue.qsize())
        if waiting[-1] == demo_module.WRITE_QUEUE:
            full.set()
        original_put(self, item)

    monkeypatch.setattr(demo_module, "_draw", slow_draw)
    monkeypatch.setattr(demo_module.OutputWriter, "put", put)
    options = DemoOptions(source="clip.avi", output=str(tmp_path / "out.avi"), json=str(tmp_path / "out.json"),
                          progress=False, smoothing="live")
    count = 50
    assert demo_module.run(options, OnePersonPipeline(), FileSource(count), show=False) == count
    document = json.loads((tmp_path / "out.json").read_text())
    assert [f["frame"] for f in document["frames"]] == list(range(count))
    capture = cv2.VideoCapture(str(tmp_path / "out.avi"))
    levels = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        levels.append(int(image[24, 32].mean()))
    assert len(levels) == count
    assert all(abs(level - 4 * index) <= 6 for index, level in enumerate(levels)), levels
    assert full.is_set() and max(waiting) == demo_module.WRITE_QUEUE  # bounded, and the run waited


def test_an_error_in_the_writer_is_the_usual_one_line_error_with_the_outputs_closed(tmp_path, monkeypatch, capsys):
    # The video cannot be written (raised in the writer thread, on the first frame): the user sees
    # the same one line and exit status 7 as for any output error, and the JSON is closed and complete.
    from app.errors import OutputError, run_command

    def failing_write(self, image):
        raise OutputError(f"cannot write video {tmp_path / 'out.mp4'} (simulated encoder failure)")

    monkeypatch.setattr(demo_module.VideoOutput, "write", failing_write)
    options = DemoOptions(source="clip.avi", output=str(tmp_path / "out.mp4"), json=str(tmp_path / "out.json"),
                          progress=False, smoothing="live")
    closed = []
    original_close = demo_module.JsonOutput.close
    monkeypatch.setattr(demo_module.JsonOutput, "close", lambda self: (closed.append(True), original_close(self)))
    status = run_command(lambda: demo_module.run(options, OnePersonPipeline(), FileSource(20), show=False), debug=False)
    assert status == OutputError.exit_code == 7
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and stderr.startswith("error: cannot write video"), stderr
    assert closed == [True]
    document = json.loads((tmp_path / "out.json").read_text())  # a whole document
    assert [f["frame"] for f in document["frames"]] == list(range(len(document["frames"])))


def test_the_jsons_visible_flags_are_the_joints_drawn():
    """Kalman on: the joints the filter holds (drawn whatever this frame's score); off: the raw
    joints scoring at least --threshold, as app.views draws them (they followed the filter even
    with Kalman off, so --threshold 0 drew joints the JSON called not visible)."""
    scores = np.array([0.05, 0.2, 0.3, 0.9] + [0.0] * 13, np.float32)
    held = np.array([False, True, True, True] + [False] * 13)
    person = Person(track_id=3, box=np.array([0, 0, 10, 20], np.float32), box_score=0.8,
                    raw_keypoints=np.zeros((17, 2), np.float32), smoothed_keypoints=np.ones((17, 2), np.float32),
                    scores=scores, visible=held, kalman=True)
    assert demo_module.person_json(person, 0.3)["visible"] == held.tolist()
    assert demo_module.person_json(person, 0.0)["visible"] == held.tolist()  # the filter decides
    person.kalman = False
    assert demo_module.person_json(person, 0.3)["visible"][:4] == [False, False, True, True]
    assert demo_module.person_json(person, 0.0)["visible"] == [True] * 17
    assert demo_module.person_json(person, 1.0)["visible"] == [False] * 17
    assert demo_module.person_json(person, 0.3)["keypoints"][:3] == [0.0, 0.0, pytest.approx(0.05)]  # raw ones
