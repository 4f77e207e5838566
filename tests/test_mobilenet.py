"""SimpleBaseline-MobileNetV2: structure against MMPose's, conversion against a PyTorch reference,
the ONNX export against Keras, and the demo running it from its converted weights."""

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import keras
import cv2
import numpy as np
import pytest
import torch

from app import weights
from app.errors import WeightsError
from app.onnx_export import export_onnx
from app.runtime import KerasRunner, OnnxRunner, load_runner
from mobilenet_reference import PoseMobileNetV2, randomized_pose_mobilenet_v2
from models.mobilenet_v2 import MobileNetV2Config, build_pose_mobilenet_v2, make_divisible
from models.simple_baseline import keras_layer_name, torch_module_name
from torch_reference import save_microsoft, save_mmpose

PARITY_TOLERANCE = 1e-4
ROOT = Path(__file__).resolve().parents[1]


def trainable_parameters(model) -> int:
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


def torch_heatmaps(model, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(batch).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()


def assert_parity(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape and actual.dtype == np.float32
    # Heatmaps that barely vary in space would let a misplaced padding pass the tolerance.
    assert expected.std(axis=(1, 2)).min() > 100 * PARITY_TOLERANCE
    assert np.abs(actual - expected).max() <= PARITY_TOLERANCE
    n, h, w, k = expected.shape
    np.testing.assert_array_equal(actual.reshape(n, h * w, k).argmax(1), expected.reshape(n, h * w, k).argmax(1))


@pytest.fixture(scope="module")
def model():
    return build_pose_mobilenet_v2()


# --- structure -------------------------------------------------------------------------------------

def test_parameter_count_equals_the_pytorch_reference(model):
    assert trainable_parameters(model) == sum(p.numel() for p in PoseMobileNetV2().parameters()) == 9_569_809


def test_256x192_gives_64x48_heatmaps_and_384x288_gives_96x72():
    assert MobileNetV2Config().heatmap_size == (64, 48)
    small = build_pose_mobilenet_v2(num_joints=5, input_size=(384, 288))
    assert tuple(small.output.shape) == (None, 96, 72, 5)


def test_every_torch_module_with_weights_has_a_keras_layer_of_the_same_name(model):
    torch_modules = {key.rsplit(".", 1)[0] for key in PoseMobileNetV2().state_dict()}
    keras_layers_with_weights = {layer.name for layer in model.layers if layer.weights}
    assert {keras_layer_name(name) for name in torch_modules} == keras_layers_with_weights
    assert {torch_module_name(name) for name in keras_layers_with_weights} == torch_modules
    assert torch_module_name("layer2_0_conv_1_conv") == "layer2.0.conv.1.conv"


def test_layers_are_mmpose_mobilenetv2s(model):
    layers = model.layers
    depthwise = [layer for layer in layers if isinstance(layer, keras.layers.DepthwiseConv2D)]
    assert len(depthwise) == 17 and all(layer.depth_multiplier == 1 for layer in depthwise)
    assert {tuple(layer.strides) for layer in depthwise} == {(1, 1), (2, 2)}
    assert all(layer.padding == "valid" for layer in depthwise)  # torch's padding is explicit
    relu6 = [layer for layer in layers if isinstance(layer, keras.layers.ReLU) and layer.max_value == 6.0]
    assert len(relu6) == 35  # conv1, expand + depthwise of 17 blocks (layer1 has no expand), conv2
    assert {layer.epsilon for layer in layers if isinstance(layer, keras.layers.BatchNormalization)} == {1e-5}
    assert model.get_layer("conv2_conv").filters == 1280
    assert model.get_layer("deconv_layers_0").input.shape[-1] == 1280  # TopdownHeatmapSimpleHead(1280)
    assert len([layer for layer in layers if isinstance(layer, keras.layers.Add)]) == 10


def test_make_divisible_follows_mmcv():
    assert [make_divisible(v) for v in (16, 24, 96 * 6, 32 * 0.35, 320 * 0.35, 24 * 0.75)] == [16, 24, 576, 16, 112, 24]
    assert MobileNetV2Config(widen_factor=1.4).stage_channels[-1] == 1792


def test_input_size_not_a_multiple_of_32_is_refused():
    with pytest.raises(ValueError, match="multiples of 32"):
        build_pose_mobilenet_v2(input_size=(250, 192))


# --- conversion ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference():
    return randomized_pose_mobilenet_v2(num_joints=17, seed=0)


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(1).standard_normal((2, 256, 192, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def expected(reference, batch):
    return torch_heatmaps(reference, batch)


@pytest.fixture(scope="module")
def converted(reference, module_tmp):
    """MMPose layout, converted through the command line; named like the zoo file."""
    folder = module_tmp("mobilenet")
    src = save_mmpose(reference, folder / "mobilenetv2_coco_256x192-00000000_20200727.pth")
    assert weights.main(["convert", str(src), str(folder / "mnv2.weights.h5")]) == 0
    return folder / "mnv2.weights.h5"


def test_mmpose_checkpoint_converts_to_identical_heatmaps(converted, expected, batch, capsys):
    info = weights.read_sidecar(converted)
    assert (info["backbone"], info["widen_factor"], info["num_joints"], info["input_size"]) == (
        "mobilenetv2", 1.0, 17, (256, 192))
    assert info["layout"] == "mmpose" and "depth" not in info
    model = weights.load_pose_model(converted)
    assert model.name == "simple_baseline_mobilenetv2"
    assert_parity(np.asarray(keras.ops.convert_to_numpy(model(batch, training=False))), expected)


def test_command_line_names_the_network(reference, tmp_path, capsys):
    src = save_microsoft(reference, tmp_path / "plain_state_dict.pth")
    assert weights.main(["convert", str(src), str(tmp_path / "m.weights.h5"), "--input-size", "128x96"]) == 0
    assert "SimpleBaseline-MobileNetV2, 17 joints, 128x96" in capsys.readouterr().out


def test_architecture_comes_from_the_keys_not_the_file_name(reference, tmp_path):
    # A MobileNetV2 checkpoint under a ResNet zoo name still converts as a MobileNetV2, exactly.
    src = save_mmpose(reference, tmp_path / "res50_coco_256x192-ec54d7f3_20200709.pth")
    out = weights.convert(src, tmp_path / "misnamed.weights.h5")
    assert weights.read_sidecar(out)["backbone"] == "mobilenetv2"
    batch = np.random.default_rng(5).standard_normal((1, 256, 192, 3)).astype(np.float32)
    assert_parity(KerasRunner(weights.load_pose_model(out))(batch), torch_heatmaps(reference, batch))


def test_narrower_mobilenet_converts_with_its_width_found_from_the_shapes(tmp_path):
    reference = randomized_pose_mobilenet_v2(num_joints=5, widen_factor=0.5, seed=2, input_size=(128, 96))
    src = save_mmpose(reference, tmp_path / "narrow.pth")
    out = weights.convert(src, tmp_path / "narrow.weights.h5", input_size=(128, 96))
    info = weights.read_sidecar(out)
    assert (info["widen_factor"], info["num_joints"]) == (0.5, 5)
    batch = np.random.default_rng(3).standard_normal((2, 128, 96, 3)).astype(np.float32)
    assert_parity(KerasRunner(weights.load_pose_model(out))(batch), torch_heatmaps(reference, batch))


def test_missing_block_or_odd_width_is_refused(reference, tmp_path):
    state = {key: value for key, value in reference.state_dict().items() if not key.startswith("layer4.3.")}
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"\(1, 2, 3, 3, 3, 3, 1\) MobileNetV2 blocks per stage"):
        weights.convert(tmp_path / "missing.pth", tmp_path / "missing.weights.h5")
    state = dict(reference.state_dict())
    state["conv2.conv.weight"] = torch.zeros(1000, 320, 1, 1)
    torch.save(state, tmp_path / "wide.pth")
    with pytest.raises(WeightsError, match="match no width multiplier"):
        weights.convert(tmp_path / "wide.pth", tmp_path / "wide.weights.h5")
    assert not list(tmp_path.glob("*.weights.h5"))


def test_sidecar_that_names_the_wrong_backbone_is_refused(converted, tmp_path):
    wrong = tmp_path / "wrong.weights.h5"
    wrong.write_bytes(converted.read_bytes())
    info = json.loads(weights.sidecar_path(converted).read_text())
    weights.sidecar_path(wrong).write_text(json.dumps({**info, "backbone": "resnet", "depth": 50}))
    with pytest.raises(WeightsError, match="does not fit SimpleBaseline-R50"):
        weights.load_pose_model(wrong)
    weights.sidecar_path(wrong).write_text(json.dumps({**info, "backbone": "vgg"}))
    with pytest.raises(WeightsError, match="unknown backbone 'vgg'"):
        weights.load_pose_model(wrong)


def test_zoo_lists_both_mobilenets_with_mmpose_names_and_ap():
    zoo = weights.MODEL_ZOO
    assert zoo["mobilenetv2_coco_256x192"].url == (
        "https://download.openmmlab.com/mmpose/top_down/mobilenetv2/mobilenetv2_coco_256x192-d1e58e7b_20200727.pth")
    assert zoo["mobilenetv2_coco_384x288"].url.endswith("/mobilenetv2_coco_384x288-26be4816_20200727.pth")
    assert (zoo["mobilenetv2_coco_256x192"].coco_ap, zoo["mobilenetv2_coco_384x288"].coco_ap) == (0.646, 0.673)
    assert (zoo["mobilenetv2_coco_256x192"].input_size, zoo["mobilenetv2_coco_384x288"].input_size) == (
        (256, 192), (384, 288))
    assert weights.DEFAULT_CHECKPOINT == "res50_coco_256x192"  # R50 stays the default


@pytest.fixture
def server():
    """A local HTTP server serving routes {path: body}; requested lists the paths asked for."""
    routes, requested = {}, []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requested.append(self.path)
            if self.path not in routes:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(routes[self.path])))
            self.end_headers()
            self.wfile.write(routes[self.path])

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", routes, requested
    httpd.shutdown()
    httpd.server_close()


def test_download_of_a_mobilenet_checkpoint_verifies_and_converts_it(server, tmp_path):
    reference = randomized_pose_mobilenet_v2(num_joints=17, seed=4, input_size=(384, 288))
    data = save_mmpose(reference, tmp_path / "source.pth").read_bytes()
    base, routes, _ = server
    name = f"mobilenetv2_test_384x288-{hashlib.sha256(data).hexdigest()[:8]}_20200727.pth"
    routes[f"/{name}"] = data
    out = weights.download_url(f"{base}/{name}", tmp_path / "weights")
    info = weights.read_sidecar(out)
    assert (info["backbone"], info["input_size"], info["source"]) == ("mobilenetv2", (384, 288), f"{base}/{name}")
    batch = np.random.default_rng(6).standard_normal((1, 384, 288, 3)).astype(np.float32)
    assert_parity(KerasRunner(weights.load_pose_model(out))(batch), torch_heatmaps(reference, batch))


def test_download_command_asks_for_the_zoo_file_and_refuses_other_bytes(server, tmp_path):
    base, routes, requested = server
    zoo_file = "mobilenetv2_coco_256x192-d1e58e7b_20200727.pth"
    routes[f"/{zoo_file}"] = b"not the published checkpoint"
    code = weights.main(["download", "mobilenetv2_coco_256x192", "--url", base, "--dir", str(tmp_path)])
    assert requested == [f"/{zoo_file}"]
    assert code != 0  # its sha256 does not start with d1e58e7b
    assert not list(tmp_path.glob("*.weights.h5"))


# --- ONNX ------------------------------------------------------------------------------------------

def test_onnx_export_matches_keras_and_torch(converted, expected, batch):
    model = weights.load_pose_model(converted)
    proto = export_onnx(model)
    ops = [node.op_type for node in proto.graph.node]
    depthwise = [node for node in proto.graph.node if node.op_type == "Conv"
                 and next((a.i for a in node.attribute if a.name == "group"), 1) > 1]
    # 17 depthwise + 33 pointwise + conv1 + conv2 + the final 1x1 + 3 deconvolutions as 4 sub-pixel
    # Convs each; BN folded into all, depthwise too.
    assert ops.count("Conv") == 53 + 12 and len(depthwise) == 17 and ops.count("DepthToSpace") == 3
    assert ops.count("Clip") == 35 and ops.count("Add") == 10
    assert not {"BatchNormalization", "Mul", "Pad"} & set(ops)
    runner = OnnxRunner(proto.SerializeToString(), threads=2)
    heatmaps = runner(batch)
    assert_parity(heatmaps, KerasRunner(model)(batch))
    assert_parity(heatmaps, expected)
    plain = export_onnx(model, subpixel=False)  # the deconvolutions as ONNX ConvTranspose
    assert [node.op_type for node in plain.graph.node].count("ConvTranspose") == 3
    assert_parity(OnnxRunner(plain.SerializeToString(), threads=2)(batch), heatmaps)


def test_relu6_export_clips_at_six_exactly():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=True)(inputs)
    outputs = keras.layers.ReLU(max_value=6.0)(x)
    model = keras.Model(inputs, outputs)
    model.layers[1].kernel.assign(np.full((3, 3, 3, 2), 1.0))
    model.layers[1].bias.assign(np.array([-20, 0, 1, 3, 5, 20], np.float32))
    batch = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    keras_out = KerasRunner(model)(batch)
    onnx_out = OnnxRunner(export_onnx(model).SerializeToString())(batch)
    assert keras_out.min() == 0.0 and keras_out.max() == 6.0  # both ends clip
    assert np.abs(onnx_out - keras_out).max() <= 1e-5


def test_load_runner_exports_and_caches_the_mobilenet(converted, expected, batch):
    runner = load_runner(converted, runtime="onnx")
    assert weights.sidecar_path(converted).with_suffix(".onnx").is_file()  # mnv2.onnx beside it
    assert_parity(runner(batch), expected)


def test_run_demo_runs_the_converted_mobilenet(converted, dancer_video, detector_path, tmp_path):
    """run_demo --weights picks the MobileNetV2 up from its sidecar (random weights: frames, not poses)."""
    out_json = tmp_path / "out.json"
    env = dict(os.environ, YOLO_OFFLINE="1")
    env.pop("DISPLAY", None)
    completed = subprocess.run(
        [sys.executable, str(ROOT / "run_demo.py"), "--headless", "--no-progress", "--source", str(dancer_video),
         "--weights", str(converted), "--detector", str(detector_path), "--detect-every", "1",
         "--max-frames", "5", "--json", str(out_json)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    frames = json.loads(out_json.read_text())["frames"]
    assert len(frames) == 5
    assert all(len(person["keypoints"]) == 51 for frame in frames for person in frame["people"])
    assert sum(len(frame["people"]) for frame in frames) >= 5


# --- choosing the network: run_demo.py --model -----------------------------------------------------

def fake_converted(folder: Path, name: str, age: float, **network) -> Path:
    """A converted-looking file pair: the choice reads only the sidecar, never the weights or the name."""
    path = folder / f"{name}.weights.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n")  # an HDF5 signature: resolve_weights reads those 8 bytes
    weights.sidecar_path(path).write_text(json.dumps({"num_joints": 17, "input_size": [256, 192], **network}))
    os.utime(path, (1e9 - age, 1e9 - age))
    return path


def test_model_shorthand_picks_the_newest_weights_of_that_network(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    r50 = fake_converted(tmp_path, "res50_coco_256x192-ec54d7f3_20200709", 30, backbone="resnet", depth=50)
    old_sidecar_r50 = fake_converted(tmp_path, "older_r50", 40, depth=50)  # sidecar from before "backbone"
    r101 = fake_converted(tmp_path, "r101", 20, backbone="resnet", depth=101)
    # Named like an R50 but a MobileNetV2 inside: the sidecar decides.
    mobilenet = fake_converted(tmp_path, "res50_lookalike", 10, backbone="mobilenetv2", widen_factor=1.0)
    assert weights.resolve_weights() == mobilenet  # no choice: the newest, as before
    assert weights.resolve_weights(model="mobilenetv2") == mobilenet
    assert weights.resolve_weights(model="r50") == r50
    r50.unlink()
    assert weights.resolve_weights(model="r50") == old_sidecar_r50
    assert weights.resolve_weights(r101) == r101
    with pytest.raises(WeightsError, match="holds SimpleBaseline-R101, not the mobilenetv2 asked for"):
        weights.resolve_weights(r101, model="mobilenetv2")


def test_model_shorthand_without_its_weights_names_the_download(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    fake_converted(tmp_path, "r50", 0, backbone="resnet", depth=50)
    with pytest.raises(weights.MissingWeightsError, match="app.weights download mobilenetv2_coco_256x192`"):
        weights.resolve_weights(model="mobilenetv2")


def test_run_demo_model_option_reaches_the_weights_choice(tmp_path, monkeypatch, capsys):
    import run_demo

    assert run_demo.parse_args(["--model", "mobilenetv2"]).model == "mobilenetv2"
    assert run_demo.parse_args([]).model is None
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    image = tmp_path / "still.png"  # the source is checked before the weights: a real one
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    code = run_demo.main(["--model", "mobilenetv2", "--headless", "--source", str(image)])
    assert code == weights.MissingWeightsError.exit_code
    assert "download mobilenetv2_coco_256x192" in capsys.readouterr().err
