"""Files we are handed never run code (issue 21): a .pt detector is checked by app.safe_pickle
before Ultralytics unpickles it. Each payload, if it ran, would create a marker file; the tests
prove it never appears."""

import os
import pickle
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
def yolo_checkpoint(tmp_path_factory) -> Path:
    """A YOLOv8n checkpoint with random weights, saved as Ultralytics saves its models (Model.save:
    the half-precision DetectionModel in a dict with date, version, license, docs)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("yolo") / "yolov8n_random.pt"
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
