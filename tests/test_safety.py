"""Files we are handed never run code (issue 21): a .pt detector is checked by app.safe_pickle
before Ultralytics unpickles it. Each payload, if it ran, would create a marker file; the tests
prove it never appears."""

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from app.detector import DetectorConfig, PersonDetector, check_pickle
from app.errors import DetectorError
from app.safe_pickle import DamagedPickle, RefusedPickle, globals_in, load_restricted, ultralytics_allowed

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def yolo_checkpoint(module_tmp) -> Path:
    """A YOLOv8n checkpoint with random weights, saved as Ultralytics saves its models (Model.save:
    the half-precision DetectionModel in a dict with date, version, license, docs)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    path = module_tmp("yolo") / "yolov8n_random.pt"
    YOLO("yolov8n.yaml").save(path)
    return path


class Payload:
    """Unpickling this runs `touch marker` (os.system), as a hostile checkpoint would."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def payload_checkpoint(yolo_checkpoint: Path, path: Path, marker: Path, **save) -> Path:
    checkpoint = torch.load(yolo_checkpoint, weights_only=False)  # our own file, made above
    checkpoint["date"] = Payload(marker)
    torch.save(checkpoint, path, **save)
    return path


def test_a_real_ultralytics_checkpoint_is_allowed_and_detects(yolo_checkpoint):
    names = globals_in(yolo_checkpoint)
    assert "ultralytics.nn.tasks.DetectionModel" in names and "torch.nn.modules.conv.Conv2d" in names
    checkpoint = load_restricted(yolo_checkpoint, ultralytics_allowed(names))
    assert type(checkpoint["model"]).__name__ == "DetectionModel"
    detector = PersonDetector(DetectorConfig(model=str(yolo_checkpoint), imgsz=64))
    boxes, scores = detector.detect(np.zeros((64, 64, 3), np.uint8))
    assert boxes.shape[1] == 4 and boxes.shape[0] == scores.shape[0]


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_a_detector_carrying_code_is_refused_before_it_runs(yolo_checkpoint, tmp_path, layout):
    marker = tmp_path / "MARKER"
    save = {} if layout == "zip" else {"_use_new_zipfile_serialization": False}
    evil = payload_checkpoint(yolo_checkpoint, tmp_path / "evil.pt", marker, **save)
    with pytest.raises(DetectorError, match=r"posix\.system\) that could run code") as error:
        PersonDetector(DetectorConfig(model=str(evil)))
    assert "\n" not in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_plain_pickle_with_a_payload_is_refused_as_code_not_damage(tmp_path, protocol):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": Payload(marker)}, protocol=protocol))
    with pytest.raises(RefusedPickle, match=r"posix\.system"):
        load_restricted(evil, ultralytics_allowed(globals_in(evil)))
    with pytest.raises(DetectorError, match="could run code"):
        check_pickle(evil)
    assert not marker.exists()


def test_a_class_named_like_a_layer_but_not_one_is_refused(tmp_path):
    # ultralytics.nn.modules imports functions too; only nn.Module classes defined there are allowed.
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(b"\x80\x02cultralytics.nn.modules.conv\nautopad\nK\x03\x85R." )
    with pytest.raises(RefusedPickle, match="autopad"):
        load_restricted(evil, ultralytics_allowed(globals_in(evil)))
    assert not marker.exists()


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.99])
def test_a_cut_detector_is_damage_not_code(yolo_checkpoint, tmp_path, cut):
    data = yolo_checkpoint.read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(DetectorError, match="truncated or not an Ultralytics checkpoint") as error:
        check_pickle(path)
    assert "could run code" not in str(error.value)
    with pytest.raises(DamagedPickle):
        load_restricted(path, [])


@pytest.mark.parametrize("name, says", [
    ("yolov8n.torchscript", "is TorchScript, a program torch.jit.load runs"),
    ("yolov8n.pb", "is a TensorFlow graph, a program"),
    ("yolov8n.engine", "is a .engine file"),
    ("yolov8n", "is a file without a suffix"),
])
def test_a_detector_format_that_can_carry_code_is_refused_unread(tmp_path, monkeypatch, name, says):
    path = tmp_path / name
    if name.endswith(".torchscript"):  # a real one, as `yolo export format=torchscript` writes
        torch.jit.save(torch.jit.script(torch.nn.Identity()), str(path))
    else:
        path.write_bytes(b"\x08\x01" * 64)
    loaded = []
    monkeypatch.setattr(torch.jit, "load", lambda *args, **kwargs: loaded.append(args))
    with pytest.raises(DetectorError) as error:
        PersonDetector(DetectorConfig(model=str(path)))
    message = str(error.value)
    assert says in message and "\n" not in message
    assert "a .pt saved by Ultralytics (checked before it loads), an .onnx or .tflite file" in message
    assert loaded == []


def test_the_demo_refuses_a_payload_detector_in_one_line(yolo_checkpoint, tmp_path, random_weights, dancer_video):
    marker = tmp_path / "MARKER"
    evil = payload_checkpoint(yolo_checkpoint, tmp_path / "evil.pt", marker)
    completed = subprocess.run(
        [sys.executable, str(ROOT / "run_demo.py"), "--headless", "--no-progress", "--source", str(dancer_video),
         "--weights", str(random_weights), "--detector", str(evil), "--max-frames", "2"],
        cwd=tmp_path, env=dict(os.environ, YOLO_OFFLINE="1"), capture_output=True, text=True, timeout=300)
    assert completed.returncode == DetectorError.exit_code, completed.stderr[-2000:]
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could run code" in errors[0] and "Traceback" not in completed.stderr
    assert not marker.exists()


# --- outputs that survive signals, SIGKILL and a full disk -------------------------------------

import contextlib  # noqa: E402
import fcntl  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402

import run_demo  # noqa: E402
from app.errors import MissingWeightsError, OutputError, SourceError  # noqa: E402
from app.outputs import JsonOutput, VideoOutput  # noqa: E402


def demo_command(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "run_demo.py"), "--headless", "--no-progress", *args]


def demo_env() -> dict:
    env = dict(os.environ, YOLO_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("DISPLAY", None)
    return env


def decoded_count(path: Path) -> int:
    """Frames OpenCV decodes from `path`, read to the first frame it cannot read."""
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def json_frames(path: Path) -> int:
    return len(json.loads(path.read_text())["frames"])


def start_demo(tmp_path, video, weights, detector, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        demo_command("--source", str(video), "--weights", str(weights), "--detector", str(detector),
                     "--detector-size", "320", *extra),
        cwd=tmp_path, env=demo_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Signals a shell without job control set to be ignored stay ignored across exec; the
        # tests are about these signals, so the child starts with their default handling.
        preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGHUP)])


def wait_for_frames(process: subprocess.Popen, json_path: Path, frames: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(ValueError, OSError):
            if json_frames(json_path) >= frames:
                return
        time.sleep(0.2)
    assert process.poll() is None, process.stderr.read()[-2000:]


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_close_the_outputs_like_ctrl_c(tmp_path, dancer_video, detector_path, random_weights,
                                                         signum, code):
    out_video, out_json = tmp_path / "out.mp4", tmp_path / "out.json"
    process = start_demo(tmp_path, dancer_video, random_weights, detector_path,
                         "--output", str(out_video), "--json", str(out_json))
    try:
        wait_for_frames(process, out_json, 20)
        process.send_signal(signum)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()
    assert process.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr and f"stopped by {signal.Signals(signum).name}: outputs closed" in stderr
    written = json_frames(out_json)
    assert written >= 20
    # Closed, not cut: the video holds every frame the JSON does, up to the frames in flight.
    assert written - 8 <= decoded_count(out_video) <= written + 8


def test_sigkill_leaves_a_video_that_plays_to_nearly_its_last_frame(tmp_path, dancer_video, detector_path,
                                                                    random_weights):
    out_video, out_json = tmp_path / "out.mp4", tmp_path / "out.json"
    process = start_demo(tmp_path, dancer_video, random_weights, detector_path, "--smoothing", "live",
                         "--output", str(out_video), "--json", str(out_json))
    try:
        wait_for_frames(process, out_json, 30)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    written = json_frames(out_json)  # the JSON is a whole document after every frame
    decoded = decoded_count(out_video)
    assert written >= 30 and written - 3 <= decoded <= written + 3, (written, decoded)


@pytest.fixture
def small_disk(tmp_path):
    """A 1.5 MB tmpfs (root only); skipped elsewhere (the /dev/full and fault tests below run anywhere)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_stops_the_run_in_one_line_with_both_files_readable(small_disk, dancer_video, detector_path,
                                                                        random_weights):
    out_video, out_json = small_disk / "out.mp4", small_disk / "out.json"
    completed = subprocess.run(
        demo_command("--source", str(dancer_video), "--weights", str(random_weights), "--detector",
                     str(detector_path), "--detector-size", "320", "--output", str(out_video), "--json",
                     str(out_json)),
        cwd=small_disk.parent, env=demo_env(), capture_output=True, text=True, timeout=600)
    assert completed.returncode == OutputError.exit_code, completed.stderr[-2000:]
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: disk full: ") and "Traceback" not in completed.stderr
    written = json_frames(out_json)
    assert 0 < written < 1000  # stopped early: the dancer has more frames
    assert written - 3 <= decoded_count(out_video) <= written + 3


def test_a_full_disk_under_each_output_alone(small_disk):
    rng = np.random.default_rng(0)
    for name in ("noise.mp4", "noise.avi"):
        path = small_disk / name
        video = VideoOutput(path, fps=25)
        with pytest.raises(OutputError, match="^disk full: ") as error:
            try:
                for _ in range(10_000):
                    video.write(rng.integers(0, 256, (96, 128, 3), np.uint8))
            finally:
                video.close()
        assert "\n" not in str(error.value)
        assert decoded_count(path) == video.frames_written > 0  # an .avi too: it was closed with its index
        path.unlink()
    path = small_disk / "big.json"
    output = JsonOutput(path)
    with pytest.raises(OutputError, match="^disk full: "):
        for index in range(100_000):
            output.write_frame(index, index / 25, [{"keypoints": rng.random(51).tolist()}])
    output.close()
    assert json_frames(path) == output.frames_written > 0


def test_a_write_that_fails_half_way_leaves_the_json_whole(tmp_path):
    """The space check cannot see another program filling the disk: the write itself then fails
    (injected here after half the record), and the file is put back to its last whole frame."""
    path = tmp_path / "out.json"
    output = JsonOutput(path)
    output.write_frame(0, 0.0, [])
    output._file = _FailingFile(output._file)
    with pytest.raises(OutputError, match=r"^disk full: cannot write .*out\.json \(No space left on device\) after 1 frames"):
        output.write_frame(1, 0.04, [{"keypoints": [1.0] * 51}])
    output._file = output._file.inner
    output.close()
    assert json_frames(path) == 1


class _FailingFile:
    """A file whose next write lands half its bytes and then fails with ENOSPC; the rest passes."""

    def __init__(self, inner):
        self.inner = inner
        self.failed = False

    def write(self, data):
        if not self.failed:
            self.failed = True
            self.inner.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        return self.inner.write(data)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_dev_full_as_the_json_is_one_line(capsys, tmp_path, random_weights, detector_path):
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.full((64, 48, 3), 255, np.uint8))
    code, stderr = run_main(capsys, "--source", str(image), "--weights", str(random_weights), "--detector",
                            str(detector_path), "--json", "/dev/full", "--overwrite")
    assert code == OutputError.exit_code and "No space left on device" in stderr
    assert_one_line(stderr)


# --- paths that must differ, files in use, names that do not fit ---------------------------------

def run_main(capsys, *args: str) -> tuple[int, str]:
    code = run_demo.main(["--headless", "--no-progress", *args])
    return code, capsys.readouterr().err


def assert_one_line(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("case", ["output is source", "json is source", "json is output", "link to source",
                                  "hard link to source"])
def test_two_paths_that_are_one_file_are_refused_before_anything_is_written(case, capsys, tmp_path):
    source = tmp_path / "clip.avi"
    source.write_bytes(b"precious" * 1000)
    before = source.read_bytes()
    args = ["--source", str(source), "--overwrite"]
    if case == "output is source":
        args += ["--output", str(source)]
    elif case == "json is source":
        args += ["--json", str(tmp_path / "." / "clip.avi")]
    elif case == "json is output":
        args = ["--source", "9", "--output", str(tmp_path / "x.avi"), "--json", str(tmp_path / "x.avi")]
    elif case == "link to source":
        (tmp_path / "link.avi").symlink_to(source)
        args += ["--output", str(tmp_path / "link.avi")]
    else:
        os.link(source, tmp_path / "hard.avi")
        args += ["--output", str(tmp_path / "hard.avi")]
    code, stderr = run_main(capsys, *args)
    assert code == OutputError.exit_code and "are the same file" in stderr, stderr
    assert_one_line(stderr)
    assert source.read_bytes() == before
    assert not (tmp_path / "x.avi").exists()


def test_an_output_another_run_is_writing_is_refused_even_with_overwrite(capsys, tmp_path):
    path = tmp_path / "out.json"
    path.write_text("{}")
    with open(path, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running demo holds it (app.outputs._lock)
        code, stderr = run_main(capsys, "--source", "9", "--json", str(path), "--overwrite")
        assert code == OutputError.exit_code and "is being written by another run" in stderr
        assert_one_line(stderr)
        with pytest.raises(OutputError, match="being written by another run"):
            JsonOutput(path)
    assert path.read_text() == "{}"


def test_two_outputs_on_one_file_in_one_process_are_refused(tmp_path):
    first = JsonOutput(tmp_path / "out.json")
    try:
        with pytest.raises(OutputError, match="being written by another run"):
            JsonOutput(tmp_path / "out.json")
    finally:
        first.close()
    assert json_frames(tmp_path / "out.json") == 0


@pytest.mark.parametrize("option", ["--output", "--json"])
def test_a_300_character_output_name_is_one_line(capsys, tmp_path, option):
    name = "x" * 296 + (".mp4" if option == "--output" else ".json")
    code, stderr = run_main(capsys, "--source", "9", option, str(tmp_path / name))
    assert code == OutputError.exit_code and "bytes long" in stderr
    assert_one_line(stderr)


def test_an_output_under_a_file_is_named_as_such(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    code, stderr = run_main(capsys, "--source", "9", "--json", str(tmp_path / "file" / "out.json"))
    assert code == OutputError.exit_code and f"{tmp_path / 'file'} is a file, not a folder" in stderr


# --- weights descriptions that do not fit: one line, exit 5 --------------------------------------

@pytest.mark.parametrize("change, reason", [
    ({"input_size": [250, 190]}, "input_size 250x190: both sides must be multiples of 32"),
    ({"input_size": [0, 0]}, "input_size 0x0: both sides must be multiples of 32"),
    ({"input_size": [256]}, "is not [height, width]"),
    ({"depth": 34}, "depth 34 is not one of the ResNets built here"),
    ({"num_joints": 0}, "num_joints 0 is not positive"),
    ("a list", "a JSON list, not an object"),
    ("not json", "Expecting property name"),
])
def test_a_sidecar_that_does_not_fit_is_one_line_exit_5(capsys, tmp_path, random_weights, change, reason):
    from app.errors import WeightsError
    from app.weights import sidecar_path

    weights = tmp_path / "odd.weights.h5"
    weights.write_bytes(random_weights.read_bytes())
    info = json.loads(sidecar_path(random_weights).read_text())
    if change == "a list":
        text = json.dumps([info])
    elif change == "not json":
        text = "{"
    else:
        text = json.dumps({**info, **change})
    sidecar_path(weights).write_text(text)
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.full((64, 48, 3), 255, np.uint8))
    code, stderr = run_main(capsys, "--source", str(image), "--weights", str(weights))
    assert code == WeightsError.exit_code == 5, stderr
    assert reason in stderr and "is not a valid weights description" in stderr
    assert_one_line(stderr)


def test_the_depths_a_sidecar_may_name_are_the_ones_built():
    from app.weights.resnet import DEPTHS
    from models.simple_baseline import BLOCKS_PER_STAGE

    assert tuple(sorted(BLOCKS_PER_STAGE)) == DEPTHS


# --- sources a user can get wrong: one line that says what is wrong -----------------------------

from app.sources import open_source  # noqa: E402


@pytest.mark.parametrize("case, message", [
    ("empty", "--source is empty; give a camera index (0), a video, an image or a folder"),
    ("device", "/dev/zero is not a regular file (a device or a pipe)"),
    ("parent is a file", "is a file, not a folder, so"),
])
def test_a_source_that_is_not_one_says_why(tmp_path, case, message):
    spec = {"empty": "", "device": "/dev/zero", "parent is a file": str(tmp_path / "clip.avi" / "frame.jpg")}[case]
    (tmp_path / "clip.avi").write_bytes(b"x")
    with pytest.raises(SourceError, match=re.escape(message)) as error:
        open_source(spec)
    assert "\n" not in str(error.value)


def test_a_cut_jpeg_in_a_folder_is_skipped_with_its_name(tmp_path, caplog):
    import logging

    whole = cv2.imencode(".jpg", np.full((48, 64, 3), 200, np.uint8))[1].tobytes()
    (tmp_path / "a.jpg").write_bytes(whole)
    (tmp_path / "b.jpg").write_bytes(whole[: len(whole) // 2])  # libjpeg would decode it half grey
    (tmp_path / "c.jpg").write_bytes(whole)
    with caplog.at_level(logging.WARNING, logger="app.sources"):
        source = open_source(tmp_path)
        names = [frame.name for frame in source]
    assert names == ["a.jpg", "c.jpg"]
    warnings = [record.getMessage() for record in caplog.records if record.name == "app.sources"]
    assert len(warnings) == 1 and "b.jpg" in warnings[0] and "cut short" in warnings[0]


def test_the_int8_litert_detector_is_called_int8(detector_path):
    detector = PersonDetector(DetectorConfig(model=str(detector_path), imgsz=320))
    assert detector.precision == "int8"  # the start-up line said float32


@pytest.mark.parametrize("frame_count, max_frames, total", [(1572, 5, 5), (3, 5, 3), (None, 5, 5), (1572, None, 1572)])
def test_the_progress_bar_total_honours_max_frames(frame_count, max_frames, total):
    from types import SimpleNamespace

    from app.demo import DemoOptions, _progress_bar

    bar = _progress_bar(DemoOptions(source="clip.mp4", max_frames=max_frames), SimpleNamespace(frame_count=frame_count),
                        live=False)
    try:
        assert bar.total == total
    finally:
        bar.close()
