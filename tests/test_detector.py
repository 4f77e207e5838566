"""Person detector on real frames, its failure modes, and Ultralytics' side effects kept in check."""

import functools
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import app.detector
from app.detector import DetectorConfig, PersonDetector, network_reachable
from app.errors import DetectorError

ROOT = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def load_detector(path: str) -> PersonDetector:
    return PersonDetector(DetectorConfig(model=path))  # loaded once: the first predict costs ~1.5 s


@pytest.fixture
def detector(detector_path):
    return load_detector(str(detector_path))


def video_frame(path, index=0):
    capture = cv2.VideoCapture(str(path))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    capture.release()
    assert ok, f"cannot read frame {index} of {path}"
    return frame


# --- real frames ------------------------------------------------------------------------------

@pytest.mark.parametrize("index", [0, 600])  # standing still, then mid-dance
def test_dancer_is_one_person_covering_her(detector, dancer_video, index):
    frame = video_frame(dancer_video, index)
    height, width = frame.shape[:2]
    boxes, scores = detector.detect(frame)
    assert boxes.shape == (1, 4) and boxes.dtype == np.float32 and scores.dtype == np.float32
    x1, y1, x2, y2 = boxes[0]
    # Measured once on frame 0: about (206, 112, 314, 482) of 518 x 496. She stands in the middle of
    # the backdrop and fills most of its height; the bounds leave room for her arms when dancing.
    assert width / 3 < (x1 + x2) / 2 < 2 * width / 3
    assert y2 - y1 > 0.5 * height
    assert x1 >= -1 and y1 >= -1 and x2 <= width + 1 and y2 <= height + 1
    assert scores[0] > 0.5


def test_street_has_many_people(detector, street_video):
    frame = video_frame(street_video, 0)
    boxes, scores = detector.detect(frame)
    assert len(boxes) >= 5  # README: 5-20 walkers; 13 found at the time of writing
    assert (scores >= detector.config.conf).all() and (np.diff(scores) <= 0).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes[:, [0, 2]].max() <= 1281 and boxes[:, [1, 3]].max() <= 721


def test_max_det_keeps_the_most_confident_boxes(detector, detector_path, street_video):
    frame = video_frame(street_video, 0)
    boxes, scores = detector.detect(frame)
    capped = PersonDetector(DetectorConfig(model=str(detector_path), max_det=3))
    top_boxes, top_scores = capped.detect(frame)
    assert len(boxes) > 3 and top_boxes.shape == (3, 4)
    np.testing.assert_allclose(top_scores, scores[:3], atol=1e-6)
    np.testing.assert_allclose(top_boxes, boxes[:3], atol=0.01)


def test_black_frame_has_nobody(detector):
    boxes, scores = detector.detect(np.zeros((480, 640, 3), np.uint8))
    assert boxes.shape == (0, 4) and scores.shape == (0,)


@pytest.mark.parametrize("shape", [(1, 1, 3), (100, 3000, 3), (3000, 100, 3), (0, 0, 3)])
def test_unusual_frame_sizes_do_not_crash(detector, shape):
    boxes, scores = detector.detect(np.full(shape, 90, np.uint8))
    assert boxes.shape == (len(scores), 4)


def test_detector_leaves_the_callers_thread_counts_alone(detector_path):
    # A fresh process, so the import itself is checked too. The counts asked for differ from the
    # NUM_THREADS = min(8, cpu_count - 1) that Ultralytics would set.
    script = textwrap.dedent(f"""
        import os
        import app
        import cv2, numpy, torch
        wanted = min(8, max(1, os.cpu_count() - 1)) + 1
        torch.set_num_threads(wanted)
        cv2.setNumThreads(2)
        from app.detector import DetectorConfig, PersonDetector
        detector = PersonDetector(DetectorConfig(model={str(detector_path)!r}))
        detector.detect(numpy.zeros((480, 640, 3), numpy.uint8))
        print(wanted, torch.get_num_threads(), cv2.getNumThreads())
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "YOLO_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    wanted, torch_threads, cv2_threads = map(int, result.stdout.split()[-3:])
    assert torch_threads == wanted and cv2_threads == 2


def test_threads_setting_is_applied(detector_path):
    before = torch.get_num_threads()
    try:
        detector = PersonDetector(DetectorConfig(model=str(detector_path), threads=1))
        detector.detect(np.zeros((64, 64, 3), np.uint8))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# --- files it cannot use ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["garbage.pt", "garbage.tflite", "garbage.onnx"])
def test_garbage_file_is_a_detector_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    # A .pt is read by app.safe_pickle before Ultralytics sees it (tests/test_safety.py).
    with pytest.raises(DetectorError, match="cannot read detector|truncated or not an Ultralytics checkpoint") as error:
        PersonDetector(DetectorConfig(model=str(path)))
    assert "\n" not in str(error.value)


def test_empty_file_is_a_detector_error(tmp_path):
    (tmp_path / "empty.tflite").write_bytes(b"")
    with pytest.raises(DetectorError, match="empty"):
        PersonDetector(DetectorConfig(model=str(tmp_path / "empty.tflite")))


def test_missing_path_fails_without_a_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DetectorError, match="not found"):
        PersonDetector(DetectorConfig(model="weights/yolov8n.pt"))  # Ultralytics would fetch it into weights/
    assert list(tmp_path.iterdir()) == []


def test_known_name_offline_fails_at_once_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(app.detector, "network_reachable", lambda *args, **kwargs: False)
    with pytest.raises(DetectorError, match=r"offline.*--detector PATH"):
        PersonDetector(DetectorConfig(model="yolov8n.pt"))
    assert list(tmp_path.iterdir()) == []


def test_network_reachable_sees_an_open_and_a_closed_port():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert network_reachable(("127.0.0.1", port), timeout_s=2.0)
    assert not network_reachable(("127.0.0.1", port), timeout_s=2.0)  # closed now: refused


def test_an_upper_body_box_inside_the_whole_person_is_merged_into_it():
    from app.detector import suppress_nested

    whole = [129, 119, 392, 482]
    upper = [131, 116, 389, 303]  # the same person's upper body, scored higher (seen on dancer.avi)
    beside = [400, 100, 480, 300]  # someone else
    behind = [200, 150, 260, 300]  # a narrower person inside the first box: another person, kept
    boxes = np.array([upper, whole, beside, behind], np.float32)
    kept, scores = suppress_nested(boxes, np.array([0.53, 0.36, 0.9, 0.4], np.float32), overlap=0.85)
    np.testing.assert_array_equal(kept, np.array([beside, whole, behind], np.float32))
    np.testing.assert_allclose(scores, [0.9, 0.53, 0.4])  # the whole person inherits the higher score


def test_a_detector_with_a_fixed_input_says_that_detector_size_does_not_apply(detector, detector_path):
    """The shared LiteRT detector takes 640 x 640 only: Ultralytics runs it at that size whatever imgsz
    asks, silently; the start-up line's note says so (and the boxes are those of 640)."""
    assert detector.input_size == (640, 640) and "fixed" not in detector.note
    small = PersonDetector(DetectorConfig(model=str(detector_path), imgsz=320))
    assert small.input_size == (640, 640)
    assert small.note.endswith("input fixed at 640x640: --detector-size 320 does not apply")
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[100:400, 250:350] = 200
    for a, b in zip(small.detect(frame), detector.detect(frame)):
        np.testing.assert_array_equal(a, b)


def test_litert_asked_for_a_gpu_runs_on_the_cpu_and_says_so(detector, detector_path, dancer_video):
    # No GPU here: were the device passed on to Ultralytics, select_device("cuda:0") would raise.
    on_gpu = PersonDetector(DetectorConfig(model=str(detector_path), device="cuda:0", half=True))
    assert (on_gpu.device, on_gpu.precision) == ("cpu", "int8")  # the int8 LiteRT file, not float16
    assert on_gpu.note.startswith("LiteRT runs on the CPU")
    frame = video_frame(dancer_video)
    boxes, scores = on_gpu.detect(frame)
    expected_boxes, expected_scores = detector.detect(frame)
    np.testing.assert_array_equal(boxes, expected_boxes)
    np.testing.assert_array_equal(scores, expected_scores)
    assert len(boxes) == 1
