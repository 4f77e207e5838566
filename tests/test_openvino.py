"""OpenVINO on the CPU and the one precision setting (issue 18): parity with Keras, bfloat16's error,
the compiled-model cache, the fallbacks, and the choices as pure functions of CPU flags and timings."""

import json
import shutil
import sys
import time

import keras
import numpy as np
import pytest

from app import runtime
from app.runtime import (
    KerasRunner, OnnxRunner, OpenVinoRunner, bf16_hint, cpu_flags, cpu_precision, load_runner,
    native_precisions, parse_precision, pick_cpu_runtime, requested_precision, resolve_runtime, runner_from_model,
)
from app.runtime.openvino_runner import CACHE_MAGIC, time_calls, timing_clock
from models.mobilenet_v2 import build_pose_mobilenet_v2
from models.simple_baseline import build_simple_baseline
from test_runtime import converted_r50, normalised_batch, randomize_batch_norms

ZEN4 = {"fpu", "avx2", "avx512f", "avx512_bf16", "avx512_vnni"}  # this machine's kind: bf16, no fp16
SKYLAKE = {"fpu", "avx2", "avx512f", "avx512_vnni"}  # no bf16 at all
SAPPHIRE_RAPIDS = {"avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile"}
NATIVE_BF16 = "bfloat16" in native_precisions(cpu_flags())
needs_openvino = pytest.mark.skipif(runtime.openvino_version() is None, reason="OpenVINO is not installed")


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| as a share of max |expected| (the issue's measure)."""
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


# --- parity with Keras ------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["r50", "mobilenetv2"])
def network(request):
    """(Keras model with random weights and batch-norm statistics, a batch, Keras' heatmaps)."""
    keras.utils.set_random_seed(3)
    if request.param == "r50":
        model = build_simple_baseline(depth=50, num_joints=17, input_size=(128, 96))
    else:
        model = build_pose_mobilenet_v2(num_joints=17, input_size=(128, 96))
    randomize_batch_norms(model, seed=4)
    batch = normalised_batch(3, (128, 96), seed=5)
    return model, batch, KerasRunner(model)(batch)


@needs_openvino
def test_openvino_float32_equals_keras(network):
    model, batch, expected = network
    runner = runner_from_model(model, "openvino", precision="f32", threads=2)
    assert isinstance(runner, OpenVinoRunner) and runner.precision == "float32" and runner.notes == []
    actual = runner(batch)
    assert actual.dtype == np.float32 and actual.shape == expected.shape == (3, 32, 24, 17)
    assert expected.std() > 0.01 * np.abs(expected).max()  # heatmaps that vary: a misplaced pad would show
    assert relative_error(actual, expected) <= 1e-5
    assert runner(batch[:0]).shape == (0, 32, 24, 17)
    np.testing.assert_allclose(runner(batch[1:2])[0], actual[1], atol=1e-5 * np.abs(expected).max())


@needs_openvino
@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no avx512_bf16 / amx_bf16: bf16 is refused here")
def test_openvino_bfloat16_stays_within_3_percent_of_float32(network):
    model, batch, expected = network
    bf16 = runner_from_model(model, "openvino", precision="bf16", threads=2)
    f32 = runner_from_model(model, "openvino", precision="f32", threads=2)
    assert bf16.precision == "bfloat16" and bf16.notes == []
    error = relative_error(bf16(batch), f32(batch))
    assert 1e-4 < error <= 0.03  # above float32's error: bfloat16 really ran; within the issue's 3 %


@needs_openvino
def test_a_precision_the_cpu_would_emulate_runs_float32_and_says_so(network, monkeypatch):
    model, batch, expected = network
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset(SKYLAKE))
    runner = runner_from_model(model, "openvino", precision="bf16", threads=2)
    assert runner.precision == "float32"
    assert runner.notes == ["--precision bf16: this CPU has no avx512_bf16 or amx_bf16, so bfloat16 would be "
                            "emulated (slower than float32); running float32"]
    assert relative_error(runner(batch), expected) <= 1e-5


# --- fallbacks ------------------------------------------------------------------------------------

def test_missing_openvino_falls_back_to_onnx_runtime_with_one_line(network, monkeypatch):
    model, batch, expected = network
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    assert runtime.openvino_version() is None
    assert resolve_runtime("auto", "cpu") == "onnx"
    runner = runner_from_model(model, "openvino", precision="bf16", threads=2)
    assert isinstance(runner, OnnxRunner) and runner.precision == "float32"
    assert len(runner.notes) == 1 and runner.notes[0].startswith("OpenVINO is not installed")
    assert "running ONNX Runtime, float32, instead" in runner.notes[0]
    assert relative_error(runner(batch), expected) <= 1e-5


@needs_openvino
def test_openvino_failing_to_compile_falls_back_to_onnx_runtime(network, monkeypatch):
    model, batch, expected = network

    def refuse(*args, **kwargs):
        raise RuntimeError("Exception from src/plugins/intel_cpu/src/node.cpp:1\nUnsupported operation Foo")

    monkeypatch.setattr(runtime, "OpenVinoRunner", refuse)
    runner = runner_from_model(model, "openvino", threads=2)
    assert isinstance(runner, OnnxRunner)
    assert runner.notes == ["OpenVINO cannot compile the pose model (Unsupported operation Foo): "
                            "running ONNX Runtime, float32, instead"]
    assert relative_error(runner(batch), expected) <= 1e-5


# --- load_runner: the compiled-model cache and --runtime auto ---------------------------------------

@pytest.fixture
def converted(tmp_path):
    """A converted R50 (random weights, 64 x 64 input) in tmp_path, its Keras heatmaps on a batch."""
    model, weights, batch = converted_r50(tmp_path, seed=7)
    return weights, batch, KerasRunner(model)(batch)


@needs_openvino
def test_compiled_model_is_cached_and_a_damaged_cache_is_rebuilt(converted, monkeypatch):
    weights, batch, expected = converted
    blob = weights.with_name("pose.openvino-f32.blob")
    first = load_runner(weights, runtime="openvino", precision="f32", threads=2)
    assert blob.is_file() and weights.with_name("pose.onnx").is_file()
    assert relative_error(first(batch), expected) <= 1e-5
    written = blob.stat().st_mtime_ns

    import app.weights

    def no_keras(*args, **kwargs):
        raise AssertionError("a cache hit must not build the Keras model")

    monkeypatch.setattr(app.weights, "load_pose_model", no_keras)
    second = load_runner(weights, runtime="openvino", precision="f32", threads=2)
    assert blob.stat().st_mtime_ns == written  # read, not compiled again
    assert second.precision == "float32" and relative_error(second(batch), expected) <= 1e-5
    monkeypatch.undo()

    data = blob.read_bytes()
    header = data[: data.index(b"\n", len(CACHE_MAGIC)) + 1]  # the magic line and the key
    for damaged in (b"not a blob", data[: len(data) // 2], data.replace(b"threads 2", b"threads 9", 1)):
        blob.write_bytes(damaged)
        runner = load_runner(weights, runtime="openvino", precision="f32", threads=2)
        assert relative_error(runner(batch), expected) <= 1e-5
        rewritten = blob.read_bytes()  # compiled again and written whole, with the right key
        assert rewritten.startswith(header) and len(rewritten) > len(header) + 100_000
    assert not [path.name for path in weights.parent.iterdir() if path.name.startswith(".")]  # no temp files


@needs_openvino
def test_runtime_auto_follows_the_timings_kept_beside_the_weights(converted, monkeypatch):
    weights, batch, expected = converted
    record = weights.with_name("pose.cpu-speed.json")
    first = load_runner(weights, runtime="auto", device="cpu", threads=2)  # times both, keeps the timings
    saved = json.loads(record.read_text())
    assert set(saved["ms"]) == {"onnx", "openvino-float32", "openvino-bfloat16"}
    assert all(saved["ms"][name] > 0 for name in ("onnx", "openvino-float32"))
    assert first.notes[0].startswith("--runtime auto: ")

    # ONNX Runtime faster for this network on this machine: auto takes it, and says so.
    saved["ms"].update({"onnx": 10.0, "openvino-float32": 12.0, "openvino-bfloat16": 5.0})
    record.write_text(json.dumps(saved))
    slower = load_runner(weights, runtime="auto", device="cpu", threads=2)
    assert isinstance(slower, OnnxRunner)
    assert slower.notes == ["--runtime auto: ONNX Runtime, 10 CPU ms a call against OpenVINO's 12 for this "
                            "network (measured here, pose.cpu-speed.json)"]
    assert relative_error(slower(batch), expected) <= 1e-5

    saved["ms"].update({"onnx": 12.0, "openvino-float32": 10.0})
    record.write_text(json.dumps(saved))
    faster = load_runner(weights, runtime="auto", device="cpu", threads=2)
    assert isinstance(faster, OpenVinoRunner) and faster.precision == "float32"
    assert faster.notes[0] == ("--runtime auto: OpenVINO, 10 CPU ms a call against ONNX Runtime's 12 for this "
                               "network (float32, measured here, pose.cpu-speed.json)")
    if NATIVE_BF16:
        assert faster.notes[1].startswith("this CPU runs bfloat16 natively (")
        assert "--precision bf16 --runtime openvino (2.0x faster than float32, measured here)" in faster.notes[1]
    assert relative_error(faster(batch), expected) <= 1e-5

    # On Windows the calls are timed in wall time (timing_clock), and the line says "ms", not "CPU ms".
    monkeypatch.setattr(runtime, "timing_clock", lambda: (time.perf_counter, "ms"))
    assert load_runner(weights, runtime="auto", device="cpu", threads=2).notes[0].startswith(
        "--runtime auto: OpenVINO, 10 ms a call against ONNX Runtime's 12 for this network")

    # An explicit float32 runtime names bf16 too, with the speed-up measured here (when it was).
    explicit = load_runner(weights, runtime="onnx", threads=2)
    assert isinstance(explicit, OnnxRunner)
    assert explicit.notes == (faster.notes[1:] if NATIVE_BF16 else [])


# --- pure functions: precision and runtime choice ----------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("auto", "auto"), ("f32", "float32"), ("F32", "float32"), ("bf16", "bfloat16"),
    ("bfloat16", "bfloat16"), ("f16", "float16"), ("float16", "float16"), (" BF16 ", "bfloat16"),
])
def test_precision_names(text, expected):
    assert parse_precision(text) == expected


@pytest.mark.parametrize("text", ["fp8", "int8", "", "half"])
def test_unknown_precision_is_refused_with_the_choices(text):
    with pytest.raises(ValueError, match="precision must be one of auto, f32, bf16, f16"):
        parse_precision(text)


def test_half_is_the_alias_of_f16():
    assert requested_precision("auto", half=True) == "float16"
    assert requested_precision("auto", half=False) == "auto"
    assert requested_precision("bf16", half=True) == "bfloat16"  # an explicit --precision wins


@pytest.mark.parametrize("command", ["run_demo", "evaluate"])
def test_argparse_lists_the_precision_choices(command, capsys):
    if command == "run_demo":
        import run_demo

        parse = run_demo.parse_args
        args = []
    else:
        from app.evaluate import parse_args as parse

        args = ["--annotations", "a.json", "--images", ".", "--out", "o.json"]
    assert parse([*args, "--precision", "bf16"]).precision == "bf16"
    with pytest.raises(SystemExit) as exit_info:
        parse([*args, "--precision", "fp8"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "argument --precision: invalid choice: 'fp8' (choose from " in error
    assert all(choice in error for choice in ("auto", "f32", "bf16", "f16"))


def test_cpu_flags_from_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 AVX512F avx512_bf16\n\n"
                   "processor\t: 1\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert cpu_flags(x86) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimdhp bf16 i8mm\n")
    assert native_precisions(cpu_flags(arm)) == {"float32", "bfloat16", "float16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()  # macOS, Windows: float32 only
    assert native_precisions(cpu_flags(tmp_path / "absent")) == {"float32"}


@pytest.mark.parametrize("requested, flags, runtime_name, expected, note", [
    ("auto", ZEN4, "openvino", "float32", ""),  # auto stays float32 even where bf16 is native
    ("float32", ZEN4, "openvino", "float32", ""),
    ("bfloat16", ZEN4, "openvino", "bfloat16", ""),
    ("bfloat16", SAPPHIRE_RAPIDS, "openvino", "bfloat16", ""),
    ("float16", SAPPHIRE_RAPIDS, "openvino", "float16", ""),
    ("bfloat16", SKYLAKE, "openvino", "float32", "no avx512_bf16 or amx_bf16, so bfloat16 would be emulated"),
    ("float16", ZEN4, "openvino", "float32", "no avx512_fp16 or amx_fp16, so float16 would be emulated"),
    ("bfloat16", ZEN4, "onnx", "float32", "ONNX Runtime runs float32 only on the CPU"),
    ("bfloat16", set(), "openvino", "float32", "would be emulated"),  # no flags known: never emulate
])
def test_cpu_precision_refuses_what_would_be_emulated(requested, flags, runtime_name, expected, note):
    precision, message = cpu_precision(requested, flags, runtime_name)
    assert precision == expected
    assert (note in message and message.endswith("running float32")) if note else message == ""


@pytest.mark.parametrize("onnx_ms, openvino_ms, expected", [
    (40.0, 35.0, "openvino"), (40.0, 40.0, "openvino"), (40.0, 40.1, "onnx"), (13.9, None, "onnx"),
])
def test_auto_picks_openvino_unless_it_measured_slower(onnx_ms, openvino_ms, expected):
    assert pick_cpu_runtime(onnx_ms, openvino_ms) == expected


def test_time_calls_takes_the_runners_in_turn_and_keeps_each_ones_fastest_call():
    # Scripted CPU seconds per call (the first is the warm-up): a busy moment slows both runners'
    # 2nd and 5th calls; the fastest call of each is what the other calls cost undisturbed.
    costs = {"onnx": [9.0, 0.120, 0.300, 0.110, 0.115, 0.400],
             "openvino-float32": [9.0, 0.105, 0.290, 0.106, 0.104, 0.380]}
    now, order = [0.0], []

    class Scripted:
        input_size = (8, 6)

        def __init__(self, name):
            self.name, self.costs = name, iter(costs[name])

        def __call__(self, batch):
            assert batch.shape == (1, 8, 6, 3) and batch.dtype == np.float32
            order.append(self.name)
            now[0] += next(self.costs)

    ms = time_calls({name: Scripted(name) for name in costs}, rounds=5, min_seconds=0, clock=lambda: now[0])
    assert ms == pytest.approx({"onnx": 110.0, "openvino-float32": 104.0})
    assert order == ["onnx", "openvino-float32"] * 6  # warm-ups, then the rounds in turn
    # (The median of each one's five calls would say 120 and 106: it moves with how many calls a
    # busy moment hits; the fastest call does not.)
    assert pick_cpu_runtime(ms["onnx"], ms["openvino-float32"]) == "openvino"


def test_calls_are_timed_in_cpu_time_except_on_windows(monkeypatch):
    """Windows counts a process's CPU time in scheduler ticks (about 15.6 ms, as long as a call of
    a small network): the fastest call would be 0 or a whole tick. There the calls take wall time."""
    assert timing_clock("win32") == (time.perf_counter, "ms")
    assert timing_clock("linux") == (time.process_time, "CPU ms") == timing_clock("darwin")
    # time_calls without a clock takes timing_clock's.
    from app.runtime import openvino_runner

    ticks = iter(range(100))
    monkeypatch.setattr(openvino_runner, "timing_clock", lambda: (lambda: next(ticks) * 0.004, "ms"))

    class Instant:
        input_size = (8, 6)

        def __call__(self, batch):
            pass

    assert time_calls({"a": Instant()}, rounds=3, min_seconds=0) == {"a": pytest.approx(4.0)}


@pytest.mark.parametrize("rounds, min_seconds, max_rounds, expected_rounds", [
    (2, 1.0, 40, 4),  # a round takes 0.3 s: 2 rounds, then on to 1.2 s
    (5, 1.0, 40, 5),  # the rounds asked for outlast the time
    (2, 100.0, 6, 6),  # a slow machine stops at max_rounds
])
def test_time_calls_goes_on_for_min_seconds_of_wall_time(rounds, min_seconds, max_rounds, expected_rounds):
    now = [0.0]
    calls = []

    def runner(batch):
        calls.append(now[0])
        now[0] += 0.15

    runner.input_size = (8, 6)
    time_calls({"a": runner, "b": runner}, rounds=rounds, min_seconds=min_seconds, max_rounds=max_rounds,
               clock=lambda: now[0], wall=lambda: now[0])
    assert len(calls) == 2 * (1 + expected_rounds)  # one warm-up each, then the rounds


def test_bf16_hint_only_where_bf16_is_native_and_not_in_use():
    hint = bf16_hint(ZEN4, "float32", 40.0, 10.0)
    assert hint.startswith("this CPU runs bfloat16 natively (avx512_bf16): --precision bf16 --runtime openvino "
                           "(4.0x faster than float32, measured here)")
    assert "(" not in bf16_hint(ZEN4, "float32", None, None).split("openvino", 1)[1]  # nothing measured: no figure
    assert bf16_hint(SKYLAKE, "float32", 40.0, 10.0) == ""
    assert bf16_hint(ZEN4, "bfloat16", 40.0, 10.0) == ""


# --- the detector through OpenVINO -------------------------------------------------------------------

@pytest.fixture(scope="module")
def random_pt(module_tmp):
    """A YOLOv8n with random weights, built from Ultralytics' own yolov8n.yaml and saved as a .pt."""
    import torch
    from ultralytics import YOLO

    torch.manual_seed(11)
    path = module_tmp("detector") / "yolov8n_random.pt"
    YOLO("yolov8n.yaml").save(str(path))
    return path


@needs_openvino
def test_a_pt_detector_on_the_cpu_runs_as_its_cached_openvino_export(random_pt):
    import openvino as ov
    import torch
    from ultralytics import YOLO

    from app.detector import DetectorConfig, PersonDetector, openvino_export_path

    config = DetectorConfig(model=str(random_pt), imgsz=64, threads=2)
    detector = PersonDetector(config)
    folder = openvino_export_path(random_pt)
    assert folder.name == "yolov8n_random_openvino_model" and (folder / "yolov8n_random.xml").is_file()
    assert detector.note == "OpenVINO export yolov8n_random_openvino_model"
    assert detector.precision == ("bfloat16" if NATIVE_BF16 else "float32")  # OpenVINO's CPU default
    assert type(detector._model.predictor.model.backend).__name__ == "OpenVINOBackend"
    boxes, scores = detector.detect(np.zeros((48, 80, 3), np.uint8))
    assert boxes.shape == (len(scores), 4) and boxes.dtype == scores.dtype == np.float32
    assert not [p.name for p in random_pt.parent.iterdir() if p.name.startswith(".")]  # no temp folder left

    # The export computes what the .pt computes (float32 arithmetic forced here: OpenVINO's CPU
    # default is bfloat16 where the CPU has it, as in the product).
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = YOLO(str(random_pt)).model.fuse().eval()(image)[0].numpy()
    compiled = ov.Core().compile_model(str(folder / "yolov8n_random.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    actual = compiled(image.numpy())[0]
    assert actual.shape == expected.shape == (1, 84, 84)  # 4 box + 80 class rows, 8x8 + 4x4 + 2x2 cells
    assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()

    # Made once: a second detector reuses it; a changed .pt or a damaged export is made again.
    made = (folder / "yolov8n_random.xml").stat().st_mtime_ns
    PersonDetector(config)
    assert (folder / "yolov8n_random.xml").stat().st_mtime_ns == made
    (folder / "yolov8n_random.bin").unlink()
    assert PersonDetector(config).note == "OpenVINO export yolov8n_random_openvino_model"
    assert (folder / "yolov8n_random.bin").is_file()
    (folder / "pose_export_key.txt").write_text("sha256 of another file")
    PersonDetector(config)
    assert (folder / "yolov8n_random.xml").stat().st_mtime_ns != made

    # The folder itself as --detector; and cpu_openvino=False keeps the .pt on torch.
    assert PersonDetector(DetectorConfig(model=str(folder), imgsz=64, threads=2)).note == ""
    torch_detector = PersonDetector(DetectorConfig(model=str(random_pt), imgsz=64, threads=2, cpu_openvino=False))
    assert torch_detector.note == "" and type(torch_detector._model.predictor.model.backend).__name__ == "PyTorchBackend"


@needs_openvino
def test_a_failed_export_runs_the_pt_through_torch_with_the_childs_last_line(random_pt, monkeypatch, tmp_path):
    """The export runs in a child process (app.detector.export_openvino_detector says why); when it
    fails, its last error line reaches the start-up note and nothing is left beside the .pt."""
    from app import detector as detector_module

    pt = tmp_path / random_pt.name  # a copy without an export beside it (the test above makes one)
    shutil.copyfile(random_pt, pt)
    monkeypatch.setattr(detector_module, "_EXPORT_SCRIPT",
                        "import sys; print('progress ...'); sys.exit('OpenVINO: export failure 0.5s: boom')")
    assert detector_module.openvino_detector(pt, 64) == (
        str(pt), "OpenVINO export failed (OpenVINO: export failure 0.5s: boom): the .pt runs through torch")
    assert sorted(p.name for p in tmp_path.iterdir()) == [pt.name]  # no export, no hidden work folder


def test_a_pt_detector_without_openvino_runs_on_torch_and_says_so(random_pt, monkeypatch):
    from app.detector import openvino_detector

    monkeypatch.setitem(sys.modules, "openvino", None)
    assert openvino_detector(random_pt, 64) == (str(random_pt), "OpenVINO is not installed: the .pt runs through torch")


def test_openvino_folder_precision_names_what_openvino_runs(tmp_path):
    from app.detector import openvino_folder_precision

    assert openvino_folder_precision(tmp_path / "yolov8n_openvino_model", ZEN4) == "bfloat16"
    assert openvino_folder_precision(tmp_path / "yolov8n_openvino_model", SKYLAKE) == "float32"
    assert openvino_folder_precision(tmp_path / "yolov8n_int8_openvino_model", ZEN4) == "int8"
