"""Model runners: the hand-written Keras -> ONNX exporter against Keras itself, the cache, runtime choice."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from app import runtime
from app.errors import MissingWeightsError
from app.onnx_export import OnnxExportError, export_onnx
from app.runtime import KerasRunner, OnnxRunner, OpenVinoRunner, load_runner, runner_from_model
from models.simple_baseline import build_simple_baseline

PARITY_TOLERANCE = 1e-4
ROOT = Path(__file__).resolve().parents[1]


def randomize_batch_norms(model: keras.Model, seed: int) -> None:
    """Give every BatchNormalization non-trivial statistics, so folding them into the convolutions
    is exercised (fresh layers have mean 0, variance 1, scale 1, offset 0: nearly the identity)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            if layer.center:
                layer.beta.assign(rng.normal(0.0, 0.1, channels))
            layer.moving_mean.assign(rng.normal(0.0, 0.1, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))


def normalised_batch(n: int, size: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *size, 3)).astype(np.float32)


def assert_same_heatmaps(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    # Heatmaps that barely vary would let a misplaced padding or crop pass the tolerance.
    assert expected.std(axis=(1, 2)).min() > 100 * PARITY_TOLERANCE
    assert np.abs(actual - expected).max() <= PARITY_TOLERANCE
    n, h, w, k = expected.shape
    np.testing.assert_array_equal(actual.reshape(n, h * w, k).argmax(1), expected.reshape(n, h * w, k).argmax(1))


# --- SimpleBaseline-R50 ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def r50():
    keras.utils.set_random_seed(0)
    model = build_simple_baseline(depth=50, num_joints=17, input_size=(256, 192))
    randomize_batch_norms(model, seed=1)
    return model


@pytest.fixture(scope="module")
def r50_runners(r50):
    return KerasRunner(r50), OnnxRunner(export_onnx(r50).SerializeToString(), threads=2)


def test_onnx_matches_keras_on_simple_baseline_r50(r50_runners):
    keras_runner, onnx_runner = r50_runners
    batch = normalised_batch(3, (256, 192), seed=2)
    assert_same_heatmaps(onnx_runner(batch), keras_runner(batch))


@pytest.mark.parametrize("n", [1, 5])
def test_onnx_batch_dimension_is_dynamic(r50_runners, n):
    keras_runner, onnx_runner = r50_runners
    batch = normalised_batch(n, (256, 192), seed=10 + n)
    heatmaps = onnx_runner(batch)
    assert heatmaps.shape == (n, 64, 48, 17)
    assert_same_heatmaps(heatmaps, keras_runner(batch))


def test_runners_describe_themselves(r50_runners):
    for runner in r50_runners:
        assert runner.input_size == (256, 192)
        assert runner.num_joints == 17
    assert r50_runners[0].name == f"keras-{keras.backend.backend()}"
    assert r50_runners[1].name == "onnxruntime-cpu"
    assert r50_runners[1].threads == 2


def test_batch_norms_fold_into_the_convolutions(r50):
    ops = [node.op_type for node in export_onnx(r50).graph.node]
    # 53 convolutions + the final 1x1, 3 deconvolutions (each 4 sub-pixel Convs + DepthToSpace),
    # every BatchNorm gone, no Pad left over.
    assert ops.count("Conv") == 54 + 3 * 4 and ops.count("DepthToSpace") == 3 and "ConvTranspose" not in ops
    assert not {"BatchNormalization", "Mul", "Pad"} & set(ops)


def test_empty_batch_gives_no_heatmaps(r50_runners):
    for runner in r50_runners:
        heatmaps = runner(np.zeros((0, 256, 192, 3), np.float32))
        assert heatmaps.shape == (0, 64, 48, 17) and heatmaps.dtype == np.float32


def test_wrong_crop_size_is_refused(r50_runners):
    for runner in r50_runners:
        with pytest.raises(ValueError, match=r"\(N, 256, 192, 3\)"):
            runner(np.zeros((1, 192, 256, 3), np.float32))


# --- every supported layer -------------------------------------------------------------------------

def every_layer_model() -> keras.Model:
    """A small model with each layer type and option export_onnx handles, in awkward sizes."""
    layers = keras.layers
    inputs = keras.Input((32, 24, 3))
    x = layers.ZeroPadding2D(1)(inputs)
    x = layers.Conv2D(8, 3, strides=2, use_bias=False)(x)  # pads folded into the Conv
    x = layers.BatchNormalization(epsilon=1e-5)(x)  # folded, bias created
    x = layers.ReLU()(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.MaxPooling2D(3, strides=2)(x)  # after a ReLU: pads folded into the MaxPool
    a = layers.Conv2D(8, 3, padding="same")(x)
    a = layers.BatchNormalization()(a)  # folded into an existing bias
    a = layers.Activation("relu")(a)
    b = layers.ZeroPadding2D(((1, 0), (0, 1)))(x)  # asymmetric
    b = layers.Conv2D(8, 2, groups=2)(b)
    x = layers.Add()([a, b])
    x = layers.BatchNormalization(scale=False)(x)  # after an Add: nothing to fold into
    x = layers.ReLU()(x)
    x = layers.Conv2D(8, 3, strides=2, padding="same")(x)  # odd "same" padding: 1 pixel, after
    x = layers.Conv2DTranspose(8, 4, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2DTranspose(6, 3, strides=2, padding="same")(x)  # odd crop
    x = layers.BatchNormalization()(x)
    x = layers.Activation("linear")(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.ReLU()(x)  # takes an explicit zero Pad
    x = layers.MaxPooling2D(3, strides=1)(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)  # odd "same" padding
    x = layers.Conv2DTranspose(4, 2, strides=2, padding="valid")(x)
    x = layers.Conv2D(5, 3, padding="same", dilation_rate=2, activation="relu")(x)
    outputs = layers.Conv2D(3, 1)(x)
    return keras.Model(inputs, outputs, name="every_layer")


def test_exporter_handles_every_supported_layer():
    keras.utils.set_random_seed(3)
    model = every_layer_model()
    randomize_batch_norms(model, seed=4)
    proto = export_onnx(model)
    ops = [node.op_type for node in proto.graph.node]
    assert {"Conv", "ConvTranspose", "Relu", "MaxPool", "Add", "Pad", "Mul"} <= set(ops)
    assert ops.count("Mul") == 1 and ops.count("Pad") == 1  # the BatchNorm after Add, the padded ReLU
    batch = normalised_batch(4, (32, 24), seed=5)
    expected = KerasRunner(model)(batch)
    assert expected.shape == (4, 16, 12, 3)
    assert_same_heatmaps(OnnxRunner(proto.SerializeToString())(batch), expected)


@pytest.mark.parametrize("layer, kind", [
    (keras.layers.UpSampling2D(2, interpolation="bilinear"), "bilinear"),  # nearest is exported (HRNet)
    (keras.layers.ReLU(negative_slope=0.1), "ReLU"),
    (keras.layers.Activation("sigmoid"), "sigmoid"),
])
def test_unsupported_layer_is_a_clear_error(layer, kind):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="first")(inputs)
    outputs = keras.layers.Conv2D(2, 1, name="last")(layer(x))
    model = keras.Model(inputs, outputs)
    with pytest.raises(OnnxExportError, match=kind) as error:
        export_onnx(model)
    assert layer.name in str(error.value)


def test_zero_padding_before_max_pooling_needs_a_relu():
    # ONNX MaxPool pads with -inf: zeros padded around negative values cannot be exported exactly.
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.ZeroPadding2D(1)(x)
    outputs = keras.layers.MaxPooling2D(3, strides=2, name="pool")(x)
    with pytest.raises(OnnxExportError, match="'pool'.*after a ReLU"):
        export_onnx(keras.Model(inputs, outputs))


# --- runtime choice --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_model():
    keras.utils.set_random_seed(6)
    return every_layer_model()


def test_auto_picks_a_cpu_runtime_without_gpu_and_keras_on_mps(small_model, monkeypatch):
    monkeypatch.setattr(runtime, "keras_device", lambda: "cpu")
    cpu_runner = OpenVinoRunner if runtime.openvino_version() is not None else OnnxRunner
    assert isinstance(runner_from_model(small_model, "auto"), cpu_runner)
    monkeypatch.setattr(runtime, "keras_device", lambda: "mps")  # CUDA: TorchRunner (tests/test_torch_runner.py)
    assert isinstance(runner_from_model(small_model, "auto"), KerasRunner)
    assert isinstance(runner_from_model(small_model, "onnx"), OnnxRunner)
    assert isinstance(runner_from_model(small_model, "keras"), KerasRunner)


def test_keras_on_a_cpu_runs_float32_where_a_lower_precision_would_be_emulated(small_model, monkeypatch):
    """--runtime keras --half (or --precision f16/bf16) on a CPU: as the other CPU runtimes, float32
    and one line where the CPU has no such arithmetic (it ran float16 emulated, silently); a
    precision the CPU has runs; a GPU keeps its float16."""
    monkeypatch.setattr(runtime, "keras_device", lambda: "cpu")
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))  # no fp16
    f16 = runner_from_model(small_model, "keras", half=True)
    assert f16.precision == "float32"
    assert f16.notes == ["--half / --precision f16: this CPU has no avx512_fp16 or amx_fp16, so float16 would be "
                         "emulated (slower than float32); running float32"]
    bf16 = runner_from_model(small_model, "keras", precision="bf16")
    assert bf16.precision == "bfloat16" and bf16.notes == []
    monkeypatch.setattr(runtime, "keras_device", lambda: "mps")
    assert runner_from_model(small_model, "keras", half=True).precision == "float16"


def test_gpu_visible_agrees_with_the_backend():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("checked against TensorFlow's device list")
    import tensorflow as tf

    assert runtime.gpu_visible() == bool(tf.config.list_physical_devices("GPU"))


def test_unknown_runtime_is_refused(small_model):
    with pytest.raises(ValueError, match="runtime must be one of"):
        runner_from_model(small_model, "tensorrt")


# --- load_runner and the cache ---------------------------------------------------------------------

def save_converted(model: keras.Model, path) -> None:
    """A converted model as app.weights writes one: <name>.weights.h5 and <name>.json."""
    model.save_weights(path)
    info = {"source": "test", "depth": 50, "num_joints": 17, "input_size": list(model.inputs[0].shape[1:3])}
    path.with_name(path.name.removesuffix(".weights.h5") + ".json").write_text(json.dumps(info))


def converted_r50(folder: Path, seed: int) -> tuple[keras.Model, Path, np.ndarray]:
    """(model, weights, batch): an R50 with random weights and batch norms at 64 x 64 (small crops:
    fast), converted into folder/pose.weights.h5, and a batch of 2 normalised crops for it."""
    keras.utils.set_random_seed(seed)
    model = build_simple_baseline(depth=50, num_joints=17, input_size=(64, 64))
    randomize_batch_norms(model, seed=seed + 1)
    weights = folder / "pose.weights.h5"
    save_converted(model, weights)
    return model, weights, normalised_batch(2, (64, 64), seed=seed + 2)


def test_load_runner_caches_the_export_and_redoes_it_when_weights_change(tmp_path, monkeypatch):
    model, weights, batch = converted_r50(tmp_path, seed=7)
    cache = tmp_path / "pose.onnx"

    keras_runner = KerasRunner(model)  # reads the model's variables: follows the change below
    first = load_runner(weights, runtime="onnx")
    assert cache.is_file() and first.input_size == (64, 64)
    assert_same_heatmaps(first(batch), keras_runner(batch))
    exported_at = cache.stat().st_mtime_ns

    import app.weights

    def no_keras(*args, **kwargs):
        raise AssertionError("a cache hit must not build the Keras model")

    with monkeypatch.context() as patch:
        patch.setattr(app.weights, "load_pose_model", no_keras)
        second = load_runner(weights, runtime="onnx")
    assert cache.stat().st_mtime_ns == exported_at
    np.testing.assert_array_equal(second(batch), first(batch))

    final = model.get_layer("final_layer")
    final.bias.assign(final.bias + 0.5)
    save_converted(model, weights)
    third = load_runner(weights, runtime="onnx")
    assert cache.stat().st_mtime_ns != exported_at
    changed = keras_runner(batch)
    assert np.abs(changed - first(batch)).min() > 0.4
    assert_same_heatmaps(third(batch), changed)

    cache.write_bytes(b"not an onnx graph")  # a damaged cache re-exports instead of failing
    assert_same_heatmaps(load_runner(weights, runtime="onnx")(batch), changed)
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")]  # no temp files left


STARTS_FROM_THE_CACHE = """
import json, sys
import numpy as np
from app.device import choose_devices
choose_devices("cpu")
from app.runtime import load_runner
weights, batch, out = sys.argv[1:4]
runners = {runtime: load_runner(weights, runtime=runtime, device="cpu") for runtime in ("auto", "onnx", "openvino")}
np.savez(out, **{runtime: runner(np.load(batch)) for runtime, runner in runners.items()})
imported = sorted(name for name in ("keras", "tensorflow") if name in sys.modules)
from app.runtime import KerasRunner  # still there, imported when asked for
print(json.dumps({"runners": {k: type(v).__name__ for k, v in runners.items()}, "imported": imported,
                  "later": "keras" in sys.modules}))
"""


def test_a_start_on_a_cached_graph_does_not_import_keras(tmp_path):
    # Keras with its TensorFlow backend takes ~3 s to import (of a ~8 s demo start): a start whose
    # exported graph is cached (every start after the first) runs ONNX Runtime or OpenVINO without it.
    model, weights, batch = converted_r50(tmp_path, seed=11)
    np.save(tmp_path / "batch.npy", batch)
    expected = load_runner(weights, runtime="auto", device="cpu")(batch)  # exports, compiles, times: cached
    assert_same_heatmaps(expected, KerasRunner(model)(batch))
    completed = subprocess.run(
        [sys.executable, "-c", STARTS_FROM_THE_CACHE, str(weights), str(tmp_path / "batch.npy"),
         str(tmp_path / "out.npz")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    record = json.loads(completed.stdout.strip().splitlines()[-1])
    assert record["imported"] == [] and record["later"] is True
    assert record["runners"]["onnx"] == "OnnxRunner" and record["runners"]["openvino"] == "OpenVinoRunner"
    heatmaps = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(heatmaps["auto"], expected)
    for name in ("onnx", "openvino"):
        assert_same_heatmaps(heatmaps[name], expected)


def test_load_runner_without_weights_says_what_to_do(tmp_path):
    with pytest.raises(MissingWeightsError, match="app.weights"):
        load_runner(tmp_path / "absent.weights.h5", runtime="onnx")
