"""HRNet-W32 / W48: structure against the authors' PoseHighResolutionNet, conversion of both checkpoint
layouts against a PyTorch reference (tests/hrnet_reference.py) through every runtime, the ONNX export,
the refusals, and the demo and evaluation running it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import torch

from app import weights
from app.errors import WeightsError
from app.onnx_export import OnnxExportError, export_onnx
from app.runtime import KerasRunner, OnnxRunner, OpenVinoRunner, load_runner
from hrnet_reference import PoseHighResolutionNet, randomized_hrnet, save_mmpose
from legacy_checkpoint import save_legacy
from models.hrnet import HRNetConfig, build_hrnet
from models.simple_baseline import keras_layer_name, torch_module_name

RELATIVE_TOLERANCE = 1e-5  # max |keras - torch| / max |torch|, the bar
ROOT = Path(__file__).resolve().parents[1]


def torch_heatmaps(model, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(batch).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()


def assert_parity(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape and actual.dtype == np.float32
    scale = np.abs(expected).max()
    # Heatmaps that barely vary in space would let a misplaced padding or upsampling pass.
    assert expected.std(axis=(1, 2)).min() > 0.01 * scale
    assert np.abs(actual - expected).max() / scale <= RELATIVE_TOLERANCE
    n, h, w, k = expected.shape
    np.testing.assert_array_equal(actual.reshape(n, h * w, k).argmax(1), expected.reshape(n, h * w, k).argmax(1))


def trainable_parameters(model) -> int:
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


# --- structure -------------------------------------------------------------------------------------

@pytest.mark.parametrize("width, count", [(32, 28_536_113), (48, 63_595_745)])
def test_parameters_and_layer_names_equal_the_authors_network(width, count):
    reference = PoseHighResolutionNet(width)
    model = build_hrnet(width, input_size=(64, 64))  # the weights do not depend on the input size
    assert trainable_parameters(model) == sum(p.numel() for p in reference.parameters()) == count  # 28.5M, 63.6M
    torch_modules = {key.rsplit(".", 1)[0] for key in reference.state_dict()}
    keras_layers_with_weights = {layer.name for layer in model.layers if layer.weights}
    assert {keras_layer_name(name) for name in torch_modules} == keras_layers_with_weights
    assert {torch_module_name(name) for name in keras_layers_with_weights} == torch_modules
    assert torch_module_name("stage3_1_fuse_layers_2_0_1_0") == "stage3.1.fuse_layers.2.0.1.0"


def test_layers_are_the_published_hrnet():
    model = build_hrnet(32, input_size=(256, 192))
    layers = model.layers
    assert tuple(model.output.shape) == (None, 64, 48, 17) and HRNetConfig().heatmap_size == (64, 48)
    assert HRNetConfig(input_size=(384, 288)).heatmap_size == (96, 72)
    assert {layer.epsilon for layer in layers if isinstance(layer, keras.layers.BatchNormalization)} == {1e-5}
    upsampling = [layer for layer in layers if isinstance(layer, keras.layers.UpSampling2D)]
    # Fusions j > i: stage2 1 module x 1, stage3 4 x 3, stage4 2 x 6 + the last module's 3 into branch 0.
    assert len(upsampling) == 1 + 12 + 12 + 3 and {layer.interpolation for layer in upsampling} == {"nearest"}
    assert {tuple(layer.size) for layer in upsampling} == {(2, 2), (4, 4), (8, 8)}
    convs = [layer for layer in layers if type(layer) is keras.layers.Conv2D]
    assert all(layer.padding == "valid" for layer in convs)  # torch's symmetric padding is explicit
    assert {tuple(layer.strides) for layer in convs} == {(1, 1), (2, 2)}
    # The branches at 1/4, 1/8, 1/16, 1/32 of 256 x 192 in stage 4.
    assert [tuple(model.get_layer(f"stage4_0_branches_{b}_3_relu2").output.shape[1:]) for b in range(4)] == [
        (64, 48, 32), (32, 24, 64), (16, 12, 128), (8, 6, 256)]
    assert model.get_layer("final_layer").kernel.shape == (1, 1, 32, 17)


def test_sizes_and_widths_outside_the_published_ones_are_refused():
    with pytest.raises(ValueError, match="multiples of 32"):
        build_hrnet(32, input_size=(256, 200))
    with pytest.raises(ValueError, match="width must be one of"):
        build_hrnet(40)


# --- conversion, W32 at 256 x 192: both layouts, every runtime ---------------------------------------

@pytest.fixture(scope="module")
def reference():
    return randomized_hrnet(32, num_joints=17, seed=0, input_size=(256, 192))


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(1).standard_normal((2, 256, 192, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def expected(reference, batch):
    return torch_heatmaps(reference, batch)


@pytest.fixture(scope="module")
def authors(reference, module_tmp):
    """The authors' layout (a bare state_dict, their file name), converted through the command line."""
    folder = module_tmp("hrnet_authors")
    src = folder / "pose_hrnet_w32_256x192.pth"
    torch.save(reference.state_dict(), src)
    assert weights.main(["convert", str(src), str(folder / "authors.weights.h5")]) == 0
    return folder / "authors.weights.h5"


@pytest.fixture(scope="module")
def mmpose(reference, module_tmp):
    """MMPose 0.x's layout, named like the zoo file, converted through the command line."""
    folder = module_tmp("hrnet_mmpose")
    src = save_mmpose(reference, folder / "hrnet_w32_coco_256x192-c78dce93_20200708.pth")
    assert weights.main(["convert", str(src), str(folder / "mmpose.weights.h5")]) == 0
    return folder / "mmpose.weights.h5"


# Every runtime on one layout, the other layout on one runtime: once converted, the two layouts are
# the same .weights.h5 to every runtime, and the Keras, auto and torch rows of a second layout cost
# 47 s of the suite (a Keras trace, exports of a 28M-parameter network) to prove nothing new.
@pytest.mark.parametrize(("layout", "runtime"), [("authors", "keras"), ("authors", "auto"), ("authors", "onnx"),
                                                 ("authors", "torch"), ("mmpose", "onnx")])
def test_every_runtime_and_both_layouts_give_the_references_heatmaps(layout, runtime, request, expected, batch):
    from app.runtime.torch_runner import TorchRunner

    converted = request.getfixturevalue(layout)
    info = weights.read_sidecar(converted)
    assert (info["backbone"], info["width"], info["num_joints"], info["input_size"]) == ("hrnet", 32, 17, (256, 192))
    assert info["layout"] == {"authors": "microsoft", "mmpose": "mmpose"}[layout]
    runner = load_runner(converted, runtime=runtime, device="cpu")
    # auto on a CPU: OpenVINO or ONNX Runtime, whichever load_runner measured faster here; torch: the
    # frozen graph that runs on CUDA (here on the CPU, the same graph)
    assert isinstance(runner, {"keras": KerasRunner, "onnx": OnnxRunner, "auto": (OnnxRunner, OpenVinoRunner),
                               "torch": TorchRunner}[runtime])
    assert_parity(runner(batch), expected)


def test_command_line_names_the_network(reference, tmp_path, capsys):
    src = tmp_path / "pose_hrnet_w32_384x288.pth"
    torch.save(reference.state_dict(), src)
    assert weights.main(["convert", str(src), str(tmp_path / "big.weights.h5")]) == 0
    assert "HRNet-W32, 17 joints, 384x288" in capsys.readouterr().out  # the size from the file name
    assert weights.read_sidecar(tmp_path / "big.weights.h5")["input_size"] == (384, 288)


def test_onnx_graph_has_every_fusion_and_folds_every_batch_norm(authors, expected, batch):
    import onnx

    runner = load_runner(authors, runtime="onnx")  # exported once, cached beside the weights
    proto = onnx.load(weights.sidecar_path(authors).with_suffix(".onnx"))
    ops = [node.op_type for node in proto.graph.node]
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in PoseHighResolutionNet(32).modules())
    assert ops.count("Conv") == convs and ops.count("Resize") == 28
    assert not {"BatchNormalization", "Mul", "Pad", "ConvTranspose"} & set(ops)
    # Fusion sums of 3 and 4 branches are one Sum each: stage3 4 modules x 3 outputs, stage4 2 x 4 + 1.
    assert ops.count("Sum") == 12 + 8 + 1
    assert_parity(runner(batch), expected)


def test_nearest_upsampling_exports_as_an_exact_resize_and_bilinear_is_refused():
    """HRNet's fusion in small: branches at 1, 1/2 and 1/4 resolution, upsampled and summed."""
    inputs = keras.Input((8, 8, 3))
    low = keras.layers.Conv2D(3, 3, strides=2, padding="valid")(keras.layers.ZeroPadding2D(1)(inputs))
    lower = keras.layers.Conv2D(3, 3, strides=2, padding="valid")(keras.layers.ZeroPadding2D(1)(low))
    up2 = keras.layers.UpSampling2D(2, interpolation="nearest")(low)  # (4, 4) -> (8, 8)
    up4 = keras.layers.UpSampling2D(4, interpolation="nearest")(lower)  # (2, 2) -> (8, 8)
    model = keras.Model(inputs, keras.layers.Add()([keras.layers.Conv2D(3, 1)(inputs), up2, up4]))
    batch = np.random.default_rng(0).standard_normal((3, 8, 8, 3)).astype(np.float32)
    proto = export_onnx(model)
    assert [node.op_type for node in proto.graph.node].count("Resize") == 2
    keras_out = KerasRunner(model)(batch)
    assert np.abs(OnnxRunner(proto.SerializeToString())(batch) - keras_out).max() <= 1e-6 * np.abs(keras_out).max()
    bilinear = keras.Model(inputs, keras.layers.UpSampling2D(2, interpolation="bilinear")(inputs))
    with pytest.raises(OnnxExportError, match="nearest only"):
        export_onnx(bilinear)


def test_legacy_cuda_checkpoint_reads_the_same_tensors(reference, tmp_path):
    """The 2020 files: legacy (pre-zip) pickles of CUDA storages, numpy 1 names in `meta`. What
    follows the reading (mapping, writing) is the path the parity tests above run."""
    state = {(f"keypoint_head.{k}" if k.startswith("final_layer.") else f"backbone.{k}"): v
             for k, v in reference.state_dict().items()}
    src = save_legacy({"meta": {"epoch": 210, "best": np.float64(0.746)}, "state_dict": state},
                      tmp_path / "hrnet_w32_coco_256x192-c78dce93_20200708.pth")
    read, layout = weights.read_checkpoint(src)
    original, _ = weights.normalize_state_dict(reference.state_dict())
    assert layout == "mmpose" and read.keys() == original.keys()
    assert all(np.array_equal(read[key], original[key]) for key in original)
    assert weights.infer_network(read) == {"backbone": "hrnet", "width": 32, "num_joints": 17}


def test_truncated_checkpoint_is_one_line_and_writes_nothing(reference, tmp_path, capsys):
    whole = save_mmpose(reference, tmp_path / "whole.pth").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole[: len(whole) // 2])
    code = weights.main(["convert", str(cut), str(tmp_path / "out" / "cut.weights.h5")])
    err = capsys.readouterr().err
    assert code == WeightsError.exit_code and "truncated or not a PyTorch checkpoint" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# --- W48: exact at a small input (the arithmetic of 256 x 192 is 4x that of W32) ----------------------

def test_w48_mmpose_checkpoint_converts_exactly(tmp_path):
    reference = randomized_hrnet(48, num_joints=17, seed=3, input_size=(64, 64))
    src = save_mmpose(reference, tmp_path / "hrnet_w48_coco_384x288-314c8528_20200708.pth")
    out = weights.convert(src, tmp_path / "w48.weights.h5", input_size=(64, 64))
    info = weights.read_sidecar(out)
    assert (info["width"], info["input_size"], weights.network_label(info)) == (48, (64, 64), "HRNet-W48")
    small = np.random.default_rng(4).standard_normal((2, 64, 64, 3)).astype(np.float32)
    expected = torch_heatmaps(reference, small)
    assert_parity(load_runner(out, runtime="keras")(small), expected)  # ONNX: the fusions are W32's, timed above


# --- refusals --------------------------------------------------------------------------------------

def test_stage_that_is_neither_w32_nor_w48_is_named_and_nothing_written(reference, tmp_path):
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("stage3.1.branches.2.3.")}
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(WeightsError, match=r"stage3 has 4 module\(s\) of 3 branches with \(4, 4, 4\) blocks .* "
                                           r"others differ; HRNet-W32 has 4 module\(s\)"):
        weights.convert(tmp_path / "short.pth", tmp_path / "short.weights.h5")
    wide = PoseHighResolutionNet(width=40)  # HRNet-W40 exists for classification, not among the pose zoos
    torch.save(wide.state_dict(), tmp_path / "w40.pth")
    with pytest.raises(WeightsError) as error:
        weights.convert(tmp_path / "w40.pth", tmp_path / "w40.weights.h5")
    message = str(error.value)
    assert "stage2 has 1 module(s) of 2 branches with (4, 4) blocks of (40, 80) channels" in message
    assert "(32, 64) or (48, 96) channels" in message and "\n" not in message
    assert not list(tmp_path.glob("*.weights.h5")) and not list(tmp_path.glob("*.json"))


def test_checkpoint_of_an_unknown_network_names_what_it_found(tmp_path, capsys):
    state = {"patch_embed.proj.weight": torch.zeros(768, 3, 16, 16), "blocks.0.attn.qkv.weight": torch.zeros(2304, 768),
             "head.weight": torch.zeros(17, 768)}
    torch.save({"state_dict": state}, tmp_path / "vitpose.pth")
    code = weights.main(["convert", str(tmp_path / "vitpose.pth"), str(tmp_path / "v.weights.h5")])
    err = capsys.readouterr().err
    assert code == WeightsError.exit_code and len(err.strip().splitlines()) == 1
    assert "top-level modules patch_embed, blocks, head" in err
    assert "patch_embed.proj.weight (768, 3, 16, 16)" in err
    assert "SimpleBaseline-ResNet-50/101/152, SimpleBaseline-MobileNetV2, HRNet-W32/W48" in err


def fake_converted(folder: Path, name: str, age: float, **network) -> Path:
    """A converted-looking file pair: the choice reads only the sidecar, never the weights or the name."""
    path = folder / f"{name}.weights.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n")  # an HDF5 signature: resolve_weights checks it
    weights.sidecar_path(path).write_text(json.dumps({"num_joints": 17, "input_size": [256, 192], **network}))
    os.utime(path, (1e9 - age, 1e9 - age))
    return path


def test_model_shorthand_picks_hrnet_and_refuses_the_other_network(tmp_path, monkeypatch, capsys):
    import run_demo

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    r50 = fake_converted(tmp_path, "r50", 30, backbone="resnet", depth=50)
    w32 = fake_converted(tmp_path, "w32", 20, backbone="hrnet", width=32)
    w48 = fake_converted(tmp_path, "w48", 10, backbone="hrnet", width=48)
    assert weights.resolve_weights(model="hrnet-w32") == w32
    assert weights.resolve_weights(model="hrnet-w48") == w48
    assert weights.resolve_weights(model="r50") == r50
    with pytest.raises(WeightsError, match="holds SimpleBaseline-R50, not the hrnet-w32 asked for"):
        weights.resolve_weights(r50, model="hrnet-w32")
    import cv2

    image = tmp_path / "still.png"  # the source opens before the weights are checked: give a real one
    cv2.imwrite(str(image), np.zeros((64, 48, 3), np.uint8))
    code = run_demo.main(["--model", "r50", "--weights", str(w32), "--headless", "--source", str(image)])
    err = capsys.readouterr().err
    assert code == WeightsError.exit_code and "holds HRNet-W32, not the r50 asked for" in err
    assert len(err.strip().splitlines()) == 1
    w48.unlink()
    with pytest.raises(weights.MissingWeightsError, match="app.weights download hrnet_w48_coco_256x192`"):
        weights.resolve_weights(model="hrnet-w48")


def test_sidecar_with_an_unpublished_width_is_refused(authors, tmp_path):
    wrong = tmp_path / "wrong.weights.h5"
    wrong.write_bytes(authors.read_bytes())
    info = json.loads(weights.sidecar_path(authors).read_text())
    weights.sidecar_path(wrong).write_text(json.dumps({**info, "width": 40}))
    with pytest.raises(WeightsError, match="HRNet width 40 is not one of"):
        weights.load_pose_model(wrong)
    weights.sidecar_path(wrong).write_text(json.dumps({**info, "width": 48}))
    with pytest.raises(WeightsError, match="does not fit HRNet-W48"):
        weights.load_pose_model(wrong)


def test_zoo_lists_mmposes_hrnets_with_their_checksums_and_ap():
    zoo = weights.MODEL_ZOO
    base = "https://download.openmmlab.com/mmpose/top_down/hrnet/"
    assert zoo["hrnet_w32_coco_256x192"].url == base + "hrnet_w32_coco_256x192-c78dce93_20200708.pth"
    assert zoo["hrnet_w48_coco_384x288"].url == base + "hrnet_w48_coco_384x288-314c8528_20200708.pth"
    assert [zoo[f"hrnet_w{w}_coco_{s}"].coco_ap for w in (32, 48) for s in ("256x192", "384x288")] == [
        0.746, 0.760, 0.756, 0.767]
    assert weights.expected_sha256_prefix(zoo["hrnet_w32_coco_256x192_dark"].url) == "07f147eb"
    assert all(zoo[name].input_size == weights.input_size_from_name(name) for name in zoo if name.startswith("hrnet"))


# --- the demo and the evaluation run it -------------------------------------------------------------

@pytest.fixture(scope="module")
def small_w32(module_tmp):
    """W32 converted at 128 x 96 (a quarter of the arithmetic; same code path) for the end-to-end runs."""
    folder = module_tmp("hrnet_small")
    src = save_mmpose(randomized_hrnet(32, seed=5, input_size=(128, 96)), folder / "hrnet_small.pth")
    return weights.convert(src, folder / "hrnet_small.weights.h5", input_size=(128, 96))


@pytest.fixture(scope="module")
def small_w32_udp(small_w32, module_tmp):
    """The same network, its JSON saying it was trained with UDP's geometry (as `convert` writes for a
    `*_udp*` file)."""
    folder = module_tmp("hrnet_small_udp")
    path = folder / "hrnet_small_udp.weights.h5"
    shutil.copyfile(small_w32, path)
    info = json.loads(weights.sidecar_path(small_w32).read_text())
    weights.sidecar_path(path).write_text(json.dumps({**info, "udp": True}))
    return path


def test_run_demo_runs_hrnet_with_flip_and_dark(small_w32_udp, dancer_video, detector_path, tmp_path):
    """Random weights: frames and the start-up line, not poses. The UDP file: its start-up line says so."""
    out_json = tmp_path / "out.json"
    env = dict(os.environ, YOLO_OFFLINE="1")
    env.pop("DISPLAY", None)
    completed = subprocess.run(
        [sys.executable, str(ROOT / "run_demo.py"), "--headless", "--no-progress", "--source", str(dancer_video),
         "--weights", str(small_w32_udp), "--detector", str(detector_path), "--max-frames", "4", "--flip",
         "--decode", "dark", "--json", str(out_json)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "HRNet-W32 UDP 128x96" in completed.stderr
    frames = json.loads(out_json.read_text())["frames"]
    assert len(frames) == 4
    assert all(len(person["keypoints"]) == 51 for frame in frames for person in frame["people"])
    assert sum(len(frame["people"]) for frame in frames) >= 4


def test_evaluate_scores_hrnet_and_follows_the_udp_in_its_json(small_w32, small_w32_udp, coco_subset, tmp_path, capsys):
    from app.evaluate import main

    annotations, images = coco_subset
    data = json.loads(Path(annotations).read_text())
    keep = {image["id"] for image in data["images"][:2]}
    data["images"] = [i for i in data["images"] if i["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps(data))
    keypoints = {}
    for name, path in (("plain", small_w32), ("udp", small_w32_udp)):
        out = tmp_path / f"{name}.json"
        code = main(["--annotations", str(subset), "--images", str(images), "--weights", str(path),
                     "--runtime", "onnx", "--device", "cpu", "--flip", "--out", str(out), "--no-progress"])
        assert code == 0, capsys.readouterr().err
        results = json.loads(out.read_text())
        assert results and all(len(r["keypoints"]) == 51 and np.isfinite(r["keypoints"]).all() for r in results)
        printed = capsys.readouterr().out
        assert "Average Precision  (AP) @[ IoU=0.50:0.95" in printed
        assert ("UDP geometry" in printed) == (name == "udp")
        keypoints[name] = np.array([r["keypoints"] for r in results]).reshape(len(results), -1, 3)[..., :2]
    # The same network and heatmaps read with the other geometry: the keypoints move (UDP's crops
    # are a pixel narrower and its heatmap pixels line up edge to edge).
    moved = np.linalg.norm(keypoints["udp"] - keypoints["plain"], axis=-1)
    assert keypoints["udp"].shape == keypoints["plain"].shape and moved.mean() > 0.1
