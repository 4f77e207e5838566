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
import pytest

import run_demo
from app import weights as weights_module
from app.errors import EXIT_INTERRUPTED

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    """An R50 with random weights at 128 x 96 (a quarter of the arithmetic of 256 x 192, same code path)."""
    from models.simple_baseline import build_simple_baseline

    folder = tmp_path_factory.mktemp("weights")
    path = folder / "random.weights.h5"
    build_simple_baseline(depth=50, num_joints=17, input_size=(128, 96)).save_weights(path)
    weights_module.sidecar_path(path).write_text(json.dumps({
        "source": "random weights (test only)", "trained": False,
        "depth": 50, "num_joints": 17, "input_size": [128, 96],
    }))
    return path


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


def test_demo_on_dancer_video_writes_every_frame_and_one_track(tmp_path, dancer_video, detector_path, random_weights):
    out_video, out_json = tmp_path / "out.mp4", tmp_path / "out.json"
    # --detect-every 1: with random weights the keypoints mean nothing, so boxes must not be derived
    # from them; the detector and tracker alone decide the track id here.
    completed = subprocess.run(
        demo_command("--source", str(dancer_video), "--weights", str(random_weights), "--detector",
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


def test_no_trained_weights_exits_2_naming_both_commands(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(weights_module, "WEIGHTS_DIR", tmp_path)  # an empty weights/ folder
    code, stderr = run_main(capsys)
    assert code == 2
    assert_one_line(stderr)
    assert "python -m app.weights download" in stderr and "python -m app.weights convert" in stderr


def test_no_trained_weights_as_a_user_sees_it(tmp_path):
    completed = subprocess.run(demo_command("--weights", str(tmp_path / "none.weights.h5")), cwd=tmp_path,
                               env=demo_env(), capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
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
