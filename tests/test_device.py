"""Where the networks run (app.device, --device, --half), without a GPU: what torch and a user's
Keras backend see is faked; the torch-backend path runs for real on this CPU, in a subprocess that
cannot import TensorFlow, and must give the default ONNX path's keypoints."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import keras
import numpy as np
import pytest

import run_demo
from app import device as device_module
from app.detector import detector_device
from app.device import (Availability, DeviceError, apply_choice, choose_backend, hud_line, parse_device,
                        resolve_device, startup_line)
from app.pose import PoseEstimator
from app.runtime import (
    KerasRunner, OnnxRunner, OpenVinoRunner, cpu_flags, half_precision, native_precisions, openvino_version,
    resolve_runtime, runner_from_model,
)
from models.simple_baseline import build_simple_baseline
from tests.test_demo import demo_command, demo_env
from tests.test_runtime import normalised_batch, randomize_batch_norms

ROOT = Path(__file__).resolve().parents[1]
NO_GPU = Availability(torch_version="2.14.1", torch_cuda="13.0")
ONE_GPU = Availability(cuda_names=("NVIDIA H200",), torch_version="2.14.1", torch_cuda="13.0")
TWO_GPUS = Availability(cuda_names=("NVIDIA H200", "NVIDIA H200"))
APPLE = Availability(mps=True)


def never_asked(backend):
    raise AssertionError(f"{backend} should not have been asked whether it sees a GPU")


# --- the device --------------------------------------------------------------------------------------

@pytest.mark.parametrize("requested, available, expected", [
    ("auto", NO_GPU, "cpu"),
    ("auto", ONE_GPU, "cuda:0"),
    ("auto", APPLE, "mps"),
    ("cpu", ONE_GPU, "cpu"),
    ("cuda", ONE_GPU, "cuda:0"),
    ("CUDA:1", TWO_GPUS, "cuda:1"),
    ("mps", APPLE, "mps"),
])
def test_device_follows_what_torch_sees(requested, available, expected):
    assert resolve_device(requested, available) == expected


@pytest.mark.parametrize("requested, available, says", [
    ("cuda", NO_GPU, "torch sees no CUDA GPU (torch 2.14.1 is built for CUDA 13.0)"),
    ("cuda:0", Availability(torch_version="2.14.1"), "CPU-only build"),
    ("cuda:2", TWO_GPUS, "torch sees 2 CUDA GPUs (cuda:0 to cuda:1); pick one of those"),
    ("cuda:1", ONE_GPU, "torch sees 1 CUDA GPU (cuda:0); pick one of those"),
    ("mps", ONE_GPU, "torch sees no Apple GPU"),
])
def test_a_gpu_torch_cannot_use_is_one_line_with_what_to_do(requested, available, says):
    with pytest.raises(DeviceError) as error:
        resolve_device(requested, available)
    message = str(error.value)
    assert says in message and "\n" not in message
    assert message.startswith(f"--device {requested}:")
    assert error.value.exit_code == 9


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "cuda0", "", "tpu"])
def test_unknown_device_names_are_refused(text):
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda, cuda:N or mps"):
        parse_device(text)


def test_run_demo_refuses_a_bad_device_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_demo.parse_args(["--device", "gpu"])
    assert exit_info.value.code == 2
    assert "--device: device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'" in capsys.readouterr().err


# --- the Keras backend -------------------------------------------------------------------------------

def test_a_gpu_without_keras_backend_set_gets_the_torch_backend_on_it():
    choice = choose_backend("auto", ONE_GPU, {}, sees_gpu=never_asked)
    assert (choice.pose_device, choice.detector_device, choice.backend) == ("cuda:0", "cuda:0", "torch")
    assert choice.env == {"KERAS_BACKEND": "torch", "KERAS_TORCH_DEVICE": "cuda:0"}
    assert choice.note == ""
    choice = choose_backend("cuda:1", TWO_GPUS, {"KERAS_BACKEND": "torch"}, sees_gpu=never_asked)
    assert choice.env == {"KERAS_BACKEND": "torch", "KERAS_TORCH_DEVICE": "cuda:1"}
    assert choose_backend("auto", APPLE, {}, sees_gpu=never_asked).env["KERAS_TORCH_DEVICE"] == "mps"


@pytest.mark.parametrize("environ, backend, env", [
    ({}, "tensorflow", {}),
    ({"KERAS_BACKEND": "jax"}, "jax", {}),
    ({"KERAS_BACKEND": "torch"}, "torch", {"KERAS_TORCH_DEVICE": "cpu"}),  # else Keras would pick the GPU
])
def test_the_cpu_keeps_the_backend(environ, backend, env):
    # --device cpu on a GPU machine too: the pose model then runs on ONNX Runtime, as before.
    for available in (NO_GPU, ONE_GPU):
        requested = "auto" if available is NO_GPU else "cpu"
        choice = choose_backend(requested, available, environ, sees_gpu=never_asked)
        assert (choice.pose_device, choice.detector_device, choice.backend, choice.env, choice.note) == \
            ("cpu", "cpu", backend, env, "")


def test_a_users_backend_that_sees_the_gpu_is_kept():
    choice = choose_backend("auto", ONE_GPU, {"KERAS_BACKEND": "tensorflow"}, sees_gpu=lambda b: b == "tensorflow")
    assert (choice.pose_device, choice.backend, choice.env) == ("cuda:0", "tensorflow", {})


def test_a_users_backend_blind_to_the_gpu_falls_back_on_auto_with_one_line():
    choice = choose_backend("auto", ONE_GPU, {"KERAS_BACKEND": "tensorflow"}, sees_gpu=lambda b: False)
    assert (choice.pose_device, choice.detector_device, choice.backend, choice.env) == \
        ("cpu", "cuda:0", "tensorflow", {})
    assert choice.note.startswith("note: pose model on the CPU: KERAS_BACKEND=tensorflow sees no GPU while torch "
                                  "sees cuda:0 (TensorFlow 2.21 needs CUDA 12")
    assert "unset KERAS_BACKEND (or set KERAS_BACKEND=torch)" in choice.note and "\n" not in choice.note


def test_a_users_backend_blind_to_an_explicit_gpu_is_an_error():
    with pytest.raises(DeviceError, match=r"^--device cuda: KERAS_BACKEND=tensorflow sees no GPU while torch "
                                          r"sees cuda:0 .*unset KERAS_BACKEND.*or use --device cpu$"):
        choose_backend("cuda", ONE_GPU, {"KERAS_BACKEND": "tensorflow"}, sees_gpu=lambda b: False)
    with pytest.raises(DeviceError, match="CUDA_VISIBLE_DEVICES=1"):
        choose_backend("cuda:1", TWO_GPUS, {"KERAS_BACKEND": "jax"}, sees_gpu=lambda b: True)


def test_apply_sets_the_environment_and_refuses_a_late_backend_change(monkeypatch):
    environ = {"PATH": "/bin"}
    choice = choose_backend("auto", ONE_GPU, environ, sees_gpu=never_asked)
    fake_keras = types.SimpleNamespace(backend=types.SimpleNamespace(backend=lambda: "tensorflow"))
    monkeypatch.setitem(sys.modules, "keras", fake_keras)
    with pytest.raises(RuntimeError, match="before the device was chosen"):
        apply_choice(choice, environ)
    assert environ == {"PATH": "/bin"}
    monkeypatch.delitem(sys.modules, "keras")
    apply_choice(choice, environ)
    assert environ == {"PATH": "/bin", "KERAS_BACKEND": "torch", "KERAS_TORCH_DEVICE": "cuda:0"}


# --- the detector and the runtime --------------------------------------------------------------------

def test_detector_formats_that_cannot_use_the_gpu_run_on_the_cpu_and_say_so(monkeypatch):
    assert detector_device("yolov8n.pt", "cuda:0") == ("cuda:0", "")
    assert detector_device("models/yolov8n.pt", "mps") == ("mps", "")
    assert detector_device("yolov8n_int8.tflite", "cpu") == ("cpu", "")
    assert detector_device("yolov8n_int8.tflite", "cuda:0") == ("cpu", "LiteRT runs on the CPU; a .pt detector runs on the GPU")
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert detector_device("yolov8n.onnx", "cuda:1")[0] == "cpu"
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert detector_device("yolov8n.onnx", "cuda:1") == ("cuda:1", "")


def test_auto_runtime_follows_the_chosen_device():
    # On the CPU: OpenVINO where installed (load_runner then checks it is not slower), else ONNX Runtime.
    assert resolve_runtime("auto", "cpu") == ("openvino" if openvino_version() is not None else "onnx")
    assert resolve_runtime("auto", "cuda:0") == "torch"  # TorchRunner: CUDA graphs (issue 17)
    assert resolve_runtime("auto", "mps") == "keras"
    assert resolve_runtime("onnx", "cuda:0") == "onnx"
    assert resolve_runtime("keras", "cpu") == "keras"


def test_startup_line_names_both_networks():
    assert startup_line("SimpleBaseline-R50 256x192", "Keras 3.15.1 (torch backend)", "cuda:0", "float16",
                        "yolov8n.pt", "cuda:0", "float16") == \
        ("pose model: SimpleBaseline-R50 256x192, Keras 3.15.1 (torch backend), cuda:0, float16; "
         "detector: yolov8n.pt, cuda:0, float16")
    assert startup_line("SimpleBaseline-R50 256x192", "ONNX Runtime 1.31.1", "cpu", "float32",
                        "yolov8n_int8.tflite", "cpu", "float32", "LiteRT runs on the CPU") == \
        ("pose model: SimpleBaseline-R50 256x192, ONNX Runtime 1.31.1, cpu, float32; "
         "detector: yolov8n_int8.tflite, cpu, float32 (LiteRT runs on the CPU)")


# --- float16 -----------------------------------------------------------------------------------------

def test_float16_heatmaps_stay_within_half_precision_of_float32():
    keras.utils.set_random_seed(20)
    model = build_simple_baseline(depth=50, num_joints=17, input_size=(128, 96))
    randomize_batch_norms(model, seed=21)
    batch = normalised_batch(3, (128, 96), seed=22)
    full, half = KerasRunner(model), KerasRunner(model, half=True)
    assert (full.precision, half.precision) == ("float32", "float16")
    assert {w.dtype for w in half.model.weights} == {"float16"}
    expected, actual = full(batch), half(batch)
    assert actual.dtype == np.float32 and actual.shape == expected.shape == (3, 32, 24, 17)
    spread = expected.max() - expected.min()
    assert spread > 0.1  # heatmaps that barely vary would let a wrong cast pass
    # float16 keeps 11 significant bits: about 1e-3 of the range after 50 layers (measured 0.5-0.9e-3
    # under TensorFlow and torch); weights not copied, or a BatchNorm in float16 gone wrong, is far off.
    assert np.abs(actual - expected).max() <= 5e-3 * spread
    assert np.corrcoef(actual.ravel(), expected.ravel())[0, 1] > 0.9999


def blob_model(input_size=(64, 48), joints=17) -> keras.Model:
    """A fixed-weight stand-in whose heatmaps are the input's brightness at stride 4 (every joint
    on the brightest spot), through the layers SimpleBaseline uses, BatchNorm included."""
    layers = keras.layers
    inputs = keras.Input((*input_size, 3))
    # A 5 x 5 window centred on input pixel 4j for heatmap pixel j, where decoding puts it.
    x = layers.ZeroPadding2D(2)(inputs)
    x = layers.Conv2D(1, 5, strides=4, use_bias=False, name="mean")(x)
    x = layers.BatchNormalization(epsilon=1e-5, name="norm")(x)
    x = layers.ReLU()(x)
    outputs = layers.Conv2D(joints, 1, name="joints")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("mean").set_weights([np.full((5, 5, 3, 1), 1 / 75, np.float32)])
    # Normalised black is about -2: shift it to zero, so the heatmap is the blob above a dark floor.
    model.get_layer("norm").set_weights([np.array([0.5], np.float32), np.array([0.0], np.float32),
                                         np.array([-2.0], np.float32), np.array([0.25], np.float32)])
    scale = np.linspace(0.5, 1.5, joints, dtype=np.float32).reshape(1, 1, 1, joints)
    model.get_layer("joints").set_weights([scale, np.zeros(joints, np.float32)])
    return model


def test_float16_keypoints_match_float32_on_a_frame():
    frame = np.zeros((240, 320, 3), np.uint8)
    yy, xx = np.mgrid[:240, :320]
    blob = np.exp(-((xx - 171.3) ** 2 + (yy - 118.6) ** 2) / (2 * 14.0 ** 2))
    frame[:] = (255 * blob)[..., None].astype(np.uint8)
    boxes = np.array([[120, 40, 220, 200], [130, 60, 215, 190]], np.float32)
    model = blob_model()
    results = [PoseEstimator(KerasRunner(model, half=half)).estimate(frame, boxes) for half in (False, True)]
    full, half = (r.keypoints for r in results)
    assert np.abs(full - np.array([171.3, 118.6])).max() < 1.0  # the stand-in finds the blob
    assert np.abs(half - full).max() < 0.05  # float16 costs less than a twentieth of a pixel here


def test_half_precision_copies_every_weight():
    model = blob_model()
    copy = half_precision(model)
    assert len(copy.weights) == len(model.weights)
    for original, cast in zip(model.weights, copy.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(cast).astype(np.float32),
                                   keras.ops.convert_to_numpy(original), rtol=1e-3, atol=1e-6)


def test_runner_from_model_passes_half_to_keras_only():
    model = blob_model()
    # Keras takes float16 on a GPU; on a CPU, as the CPU runtimes, only where the CPU has it in hardware.
    keras_half = runner_from_model(model, "keras", half=True)
    native = "float16" in native_precisions(cpu_flags())
    assert keras_half.precision == ("float16" if native or keras_half.device != "cpu" else "float32")
    # A CPU runtime: float16 only where the CPU has it in hardware (app.runtime.precision), else float32.
    cpu = runner_from_model(model, "auto", device="cpu", half=True)
    native_f16 = "float16" in native_precisions(cpu_flags()) and isinstance(cpu, OpenVinoRunner)
    assert isinstance(cpu, (OnnxRunner, OpenVinoRunner)) and cpu.device == "cpu"
    assert cpu.precision == ("float16" if native_f16 else "float32")


# --- run_demo ----------------------------------------------------------------------------------------

def without_untrained_warning(stderr: str) -> str:
    """stderr less the warning every run with the tests' random weights prints first."""
    return "".join(line for line in stderr.splitlines(keepends=True) if "holds UNTRAINED weights" not in line)


def test_device_cuda_without_a_gpu_exits_9_with_one_line(tmp_path, random_weights, dancer_video):
    completed = subprocess.run(demo_command("--device", "cuda", "--weights", str(random_weights),
                                            "--source", str(dancer_video)), cwd=tmp_path,
                               env=demo_env(), capture_output=True, text=True, timeout=120)
    assert completed.returncode == 9, completed.stderr
    stderr = without_untrained_warning(completed.stderr)
    assert stderr.strip().count("\n") == 0, completed.stderr
    assert stderr.startswith("error: --device cuda: torch sees no CUDA GPU")


def test_tensorflow_blind_to_torchs_gpu_falls_back_with_a_note(capsys, monkeypatch, tmp_path, random_weights,
                                                                 detector_path, dancer_video):
    # A GPU machine as the issue found it: torch sees the GPU, TensorFlow (CUDA 12) does not.
    monkeypatch.setattr(device_module, "torch_availability", lambda: ONE_GPU)
    monkeypatch.setattr(device_module, "backend_sees_gpu", lambda backend: False)
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    args = ["--headless", "--no-progress", "--weights", str(random_weights), "--detector", str(detector_path),
            "--source", str(dancer_video), "--max-frames", "2"]
    assert run_demo.main([*args, "--device", "cuda"]) == 9
    stderr = without_untrained_warning(capsys.readouterr().err)
    assert stderr.startswith("error: --device cuda: KERAS_BACKEND=tensorflow sees no GPU") and stderr.count("\n") == 1

    assert run_demo.main([*args, "--device", "auto", "--half"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith("note: pose model on the CPU: KERAS_BACKEND=tensorflow sees no GPU") for line in lines)
    assert os.environ["KERAS_BACKEND"] == "tensorflow"  # the user's choice stands
    # The CPU runtime is --runtime auto's measured pick (OpenVINO or ONNX Runtime): the engine is not asserted.
    (startup,) = [line for line in lines if line.startswith("pose model: SimpleBaseline-R50 128x96, ")]
    _, engine, rest = startup.split(", ", 2)
    assert engine.startswith(("OpenVINO ", "ONNX Runtime "))
    assert rest == "cpu, float32; detector: yolov8n_int8.tflite, cpu, int8 (LiteRT runs on the CPU; a .pt detector runs on the GPU)"


# `python -c WITHOUT_TENSORFLOW script.py args` runs script.py as `python script.py args` would
# (its folder first on the path), with TensorFlow unimportable: a GPU machine with torch and no TensorFlow.
WITHOUT_TENSORFLOW = ("import os, runpy, sys; sys.modules['tensorflow'] = None; sys.argv = sys.argv[1:]; "
                      "sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0])); "
                      "runpy.run_path(sys.argv[0], run_name='__main__')")


def demo_keypoints(path: Path) -> np.ndarray:
    """(frames, people, K, 2) keypoints of a run_demo JSON with one person a frame."""
    frames = json.loads(path.read_text())["frames"]
    assert all(len(frame["people"]) == 1 for frame in frames)
    return np.array([[np.reshape(p["keypoints"], (-1, 3))[:, :2] for p in f["people"]] for f in frames])


def test_torch_backend_without_tensorflow_gives_the_default_paths_keypoints(tmp_path, random_weights, detector_path,
                                                                            dancer_video):
    frames = 20
    common = ["--source", str(dancer_video), "--weights", str(random_weights), "--detector", str(detector_path),
              "--max-frames", str(frames), "--detect-every", "1", "--no-kalman"]
    default = subprocess.run(demo_command(*common, "--json", str(tmp_path / "onnx.json")), cwd=tmp_path,
                             env=demo_env(), capture_output=True, text=True, timeout=600)
    assert default.returncode == 0, default.stderr[-2000:]
    assert "ONNX Runtime" in default.stderr

    command = demo_command(*common, "--runtime", "keras", "--json", str(tmp_path / "torch.json"))
    torch_env = dict(demo_env(), KERAS_BACKEND="torch")
    torch_run = subprocess.run([command[0], "-c", WITHOUT_TENSORFLOW, *command[1:]], cwd=tmp_path, env=torch_env,
                               capture_output=True, text=True, timeout=600)
    assert torch_run.returncode == 0, torch_run.stderr[-2000:]
    assert "Traceback" not in torch_run.stderr
    assert "pose model: SimpleBaseline-R50 128x96, Keras" in torch_run.stderr
    assert "(torch backend), cpu, float32; detector: yolov8n_int8.tflite, cpu, int8" in torch_run.stderr

    onnx_points, torch_points = demo_keypoints(tmp_path / "onnx.json"), demo_keypoints(tmp_path / "torch.json")
    assert onnx_points.shape == torch_points.shape == (frames, 1, 17, 2)
    assert np.ptp(onnx_points, axis=(0, 1, 2)).min() > 20  # keypoints that move, not a constant
    assert np.abs(torch_points - onnx_points).max() <= 0.5


def test_jax_backend_gives_the_default_paths_keypoints(tmp_path, random_weights, detector_path, dancer_video):
    pytest.importorskip("jax", reason="JAX is not installed here; the torch backend test covers the Keras path")
    common = ["--source", str(dancer_video), "--weights", str(random_weights), "--detector", str(detector_path),
              "--max-frames", "10", "--detect-every", "1", "--no-kalman"]
    runs = {}
    for name, env, extra in (("onnx", demo_env(), []), ("jax", dict(demo_env(), KERAS_BACKEND="jax"), ["--runtime", "keras"])):
        out = tmp_path / f"{name}.json"
        completed = subprocess.run(demo_command(*common, *extra, "--json", str(out)), cwd=tmp_path, env=env,
                                   capture_output=True, text=True, timeout=600)
        assert completed.returncode == 0, completed.stderr[-2000:]
        runs[name] = demo_keypoints(out)
    assert np.abs(runs["jax"] - runs["onnx"]).max() <= 0.5


# --- crops on the device (benchmarks/gpu_check.py measures them against the product's CPU warps) ------

def test_device_crops_match_the_cpu_warps():
    from app.crop import boxes_to_center_scale, crop_transforms, normalize, warp_crops
    from benchmarks.gpu_check import device_crops

    rng = np.random.default_rng(30)
    frame = cv2_blur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    boxes = np.array([[20, 10, 90, 110], [100.5, 30.25, 150, 80], [-20, -10, 60, 70]], np.float32)
    centers, sizes = boxes_to_center_scale(boxes, aspect_ratio=48 / 64, padding=1.25)
    forward, to_image = crop_transforms(centers, sizes, (64, 48))
    expected = normalize(warp_crops(frame, forward, (64, 48)))
    actual = device_crops(frame, to_image, (64, 48), "cpu").numpy()
    assert actual.shape == expected.shape == (3, 64, 48, 3)
    in_255 = np.abs(actual - expected)[:, 2:-2, 2:-2] * 0.226 * 255  # back to 0-255 steps
    # cv2 rounds to uint8 and interpolates in fixed point: half a step and a little more.
    assert in_255.max() < 1.0 and in_255.mean() < 0.4


def cv2_blur(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(image, (5, 5), 1.5)  # smooth enough that bilinear sampling is well defined


def test_the_hud_gets_the_start_up_lines_gist_in_a_few_words():
    assert hud_line("cuda:0", "float16", "cuda:0") == "pose cuda:0 float16, detector cuda:0"
    assert len(hud_line("cpu", "float32", "cpu")) < 40  # one HUD line on a 320-px-wide window
