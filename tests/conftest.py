"""Shared fixtures. Real data lives in ../shared/assets beside the clone (see its README).

Tests that need it skip with a reason when it is absent (a user's clone) and fail
instead when POSE_REQUIRE_ASSETS=1 (CI), so a missing folder can never pass silently.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

import app  # noqa: F401  (keeps triton out of the test process: see app/__init__.py)

ROOT = Path(__file__).resolve().parents[1]

# The fast subset (`pytest -m "not slow"`, README) leaves out these modules: they drive the whole demo
# in subprocesses, a window under Xvfb, network servers, signals and full disks, or networks of 28-64M
# parameters against their PyTorch references; together they are most of the suite's time.
SLOW_MODULES = frozenset({"test_window", "test_streams", "test_safety", "test_hrnet", "test_torch_runner",
                          "test_soak"})
SLOW_TESTS = frozenset({"test_demo_on_dancer_video_writes_every_frame_and_one_track"})  # the whole dancer clip


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__.rpartition(".")[2] in SLOW_MODULES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
ASSETS = Path(os.environ.get("POSE_ASSETS", ROOT.parent / "shared" / "assets"))


def asset(relative: str) -> Path:
    """Path of a shared asset, or skip (fail under POSE_REQUIRE_ASSETS=1) when it is missing."""
    path = ASSETS / relative
    if not path.exists():
        message = f"shared asset {path} not found (it sits in ../shared/assets beside the clone)"
        if os.environ.get("POSE_REQUIRE_ASSETS") == "1":
            pytest.fail(message + "; POSE_REQUIRE_ASSETS=1 forbids skipping", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture
def coco_subset():
    """(annotations json, images dir) of the 36-image COCO val2017 keypoint subset."""
    return asset("coco/annotations/person_keypoints_val2017_subset.json"), asset("coco/images")


@pytest.fixture
def detector_path():
    """The trained YOLOv8n LiteRT int8 detector."""
    return asset("detector/yolov8n_int8.tflite")


@pytest.fixture
def dancer_video():
    return asset("videos/dancer.avi")


@pytest.fixture
def street_video():
    return asset("videos/street.avi")


@pytest.fixture
def dancer_tracks():
    return asset("tracks/dancer_movenet_0-800.npz")


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    """mktemp(name) for a module's shared files; the folders go when the module is done.

    The converted networks with their cached graphs are 100-550 MB a folder: kept to the end of the
    session (pytest's own rule for tmp_path_factory), the suite held 9 GB of them beside an 8.5 GB
    venv, and a CI disk with less room than that failed every later test at its tmp_path."""
    made = []

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def random_weights(module_tmp) -> Path:
    """Converted weights (a .weights.h5 and its JSON) of an R50 with random weights at 128 x 96: a
    quarter of the arithmetic of 256 x 192, same code path. The demo warns that they are untrained."""
    from app.weights import sidecar_path
    from models.simple_baseline import build_simple_baseline

    folder = module_tmp("weights")
    path = folder / "random.weights.h5"
    build_simple_baseline(depth=50, num_joints=17, input_size=(128, 96)).save_weights(path)
    sidecar_path(path).write_text(json.dumps({
        "source": "random weights (test only)", "trained": False,
        "depth": 50, "num_joints": 17, "input_size": [128, 96],
    }))
    return path


@pytest.fixture(scope="module")
def random_mobilenet_weights(module_tmp) -> Path:
    """Converted weights of a SimpleBaseline-MobileNetV2 with random weights at 128 x 96: a third of
    random_weights' time a call (11 against 34 CPU ms, OpenVINO float32, 2-core EPYC), for the runs
    over a whole video, where what the network says does not matter and its time adds up."""
    from app.weights import sidecar_path
    from models.mobilenet_v2 import build_pose_mobilenet_v2

    folder = module_tmp("weights-mobilenet")
    path = folder / "random-mobilenet.weights.h5"
    build_pose_mobilenet_v2(num_joints=17, input_size=(128, 96)).save_weights(path)
    sidecar_path(path).write_text(json.dumps({
        "source": "random weights (test only)", "trained": False,
        "backbone": "mobilenetv2", "widen_factor": 1.0, "num_joints": 17, "input_size": [128, 96],
    }))
    return path
