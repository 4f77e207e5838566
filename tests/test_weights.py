"""Checkpoint conversion, loading and download, against a PyTorch reference and a local HTTP server."""

import hashlib
import http.server
import json
import os
import re
import socket
import threading
from collections import OrderedDict

import keras
import numpy as np
import pytest
import torch

from app import weights
from app.errors import DownloadError, MissingWeightsError, WeightsError
from legacy_checkpoint import pickled_globals_and_locations, save_legacy
from torch_reference import randomized_pose_resnet, save_microsoft, save_mmpose

PARITY_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference():
    return randomized_pose_resnet(depth=50, num_joints=17, seed=0)


@pytest.fixture(scope="module")
def batch():
    """Two normalised RGB crops, NHWC."""
    return np.random.default_rng(1).standard_normal((2, 256, 192, 3)).astype(np.float32)


def torch_heatmaps(model, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(batch).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def expected(reference, batch):
    heatmaps = torch_heatmaps(reference, batch)
    # Heatmaps that barely vary in space would let a misplaced deconvolution pass the tolerance.
    assert heatmaps.std(axis=(1, 2)).min() > 100 * PARITY_TOLERANCE
    return heatmaps


@pytest.fixture(scope="module")
def checkpoint_dir(module_tmp):
    return module_tmp("checkpoints")


@pytest.fixture(scope="module")
def microsoft_checkpoint(reference, checkpoint_dir):
    return save_microsoft(reference, checkpoint_dir / "pose_resnet_50_256x192.pth.tar")


def assert_parity(weights_path, expected, batch):
    model = weights.load_pose_model(weights_path)
    heatmaps = keras.ops.convert_to_numpy(model(batch, training=False))
    assert heatmaps.shape == expected.shape
    assert np.abs(heatmaps - expected).max() <= PARITY_TOLERANCE
    n, h, w, k = expected.shape
    assert (heatmaps.reshape(n, h * w, k).argmax(1) == expected.reshape(n, h * w, k).argmax(1)).all()


def converted_files(folder):
    return sorted(path.name for path in folder.iterdir())


# --- parity ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def converted(microsoft_checkpoint, module_tmp):
    """The Microsoft checkpoint converted to its default destination, in a stand-in weights/."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(weights, "WEIGHTS_DIR", module_tmp("weights"))
        return weights.convert(microsoft_checkpoint)


def test_microsoft_checkpoint_converts_to_identical_heatmaps(converted, microsoft_checkpoint, expected, batch):
    assert_parity(converted, expected, batch)
    # Default destination: weights/<checkpoint stem>.weights.h5 and its JSON, no temp file left.
    assert converted.name == "pose_resnet_50_256x192.weights.h5"
    assert converted_files(converted.parent) == ["pose_resnet_50_256x192.json", converted.name]
    info = json.loads(weights.sidecar_path(converted).read_text())
    assert info["depth"] == 50 and info["num_joints"] == 17 and info["input_size"] == [256, 192]
    assert info["layout"] == "microsoft"
    assert info["source_sha256"] == hashlib.sha256(microsoft_checkpoint.read_bytes()).hexdigest()


def test_no_path_loads_the_converted_model_in_weights_dir(converted, monkeypatch):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", converted.parent)
    assert weights.default_weights_path() == converted
    assert weights.resolve_weights() == converted
    assert weights.load_pose_model().get_layer("final_layer").kernel.shape == (1, 1, 256, 17)


def test_dataparallel_module_prefix_is_stripped(reference, checkpoint_dir, expected, batch, tmp_path):
    src = save_microsoft(reference, checkpoint_dir / "dataparallel.pth", module_prefix=True)
    assert_parity(weights.convert(src, tmp_path / "dp.weights.h5"), expected, batch)


@pytest.mark.parametrize(("version", "name"), [
    ("0.x", "res50_coco_256x192-00000000_20200709.pth"),
    ("1.x", "td-hm_res50_8xb64-210e_coco-256x192-00000000_20220923.pth"),  # MMPose 1.x's zoo names
])
def test_mmpose_checkpoint_converts_through_the_command_line(
    version, name, reference, checkpoint_dir, expected, batch, tmp_path, capsys
):
    src = save_mmpose(reference, checkpoint_dir / name, version)
    assert weights.main(["convert", str(src), str(tmp_path / "mm.weights.h5")]) == 0
    assert "SimpleBaseline-R50, 17 joints, 256x192" in capsys.readouterr().out
    assert json.loads((tmp_path / "mm.json").read_text())["layout"] == "mmpose"
    assert_parity(tmp_path / "mm.weights.h5", expected, batch)


# --- refusals ----------------------------------------------------------------------------------------

class RunsCode:
    """Unpickling this would call os.mkdir: proof of code execution if the marker appears."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_checkpoint_carrying_code_is_refused_without_running_it(reference, tmp_path):
    marker = tmp_path / "code_ran"
    src = tmp_path / "evil.pth"
    torch.save({**reference.state_dict(), "payload": RunsCode(marker)}, src)
    with pytest.raises(WeightsError, match="could run code"):
        weights.convert(src, tmp_path / "out" / "evil.weights.h5")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_truncated_checkpoint_is_refused(microsoft_checkpoint, tmp_path):
    data = microsoft_checkpoint.read_bytes()
    src = tmp_path / "cut.pth"
    for cut in np.linspace(10, len(data) - 1, 8, dtype=int):  # zip format: the directory is at the end
        src.write_bytes(data[:cut])
        with pytest.raises(WeightsError, match="truncated or not a PyTorch checkpoint .* a zip checkpoint whose end is missing"):
            weights.convert(src, tmp_path / "cut.weights.h5")
    assert converted_files(tmp_path) == ["cut.pth"]


def test_numpy_values_in_meta_are_data_not_code(reference, tmp_path):
    # Training loops store a best score or a seed as numpy scalars in `meta`; those must still load.
    src = tmp_path / "meta.pth"
    meta = {"best_ap": np.float64(0.718), "seed": np.int64(0), "lr_steps": np.array([170, 200])}
    torch.save({"meta": meta, "state_dict": reference.state_dict()}, src)
    state, layout = weights.read_checkpoint(src)
    assert layout == "microsoft"
    assert weights.infer_architecture(state) == (50, 17)
    np.testing.assert_array_equal(state["final_layer.bias"], reference.final_layer.bias.detach().numpy())


# --- legacy (pre-zip) files, as the published ones -------------------------------------------------

def mmpose_layout(model) -> dict:
    """An MMPose 2020 checkpoint's object: numpy-1 values in meta, backbone./keypoint_head. keys."""
    state = OrderedDict(
        (f"keypoint_head.{key}" if key.startswith(("deconv_layers.", "final_layer.")) else f"backbone.{key}", value)
        for key, value in model.state_dict().items()
    )
    meta = {"mmcv_version": "1.0.5", "time": "Thu Jul  9 02:05:11 2020", "epoch": 210, "iter": 97920,
            "hook_msgs": {"best_score": np.float64(0.7178), "last_ckpt": "work_dirs/epoch_210.pth"},
            "seed": np.int64(0), "lr_steps": np.array([170, 200]), "lr": np.float32(1e-5)}
    return {"meta": meta, "state_dict": state}


@pytest.fixture(scope="module")
def legacy_mmpose(reference, checkpoint_dir):
    return save_legacy(mmpose_layout(reference), checkpoint_dir / "res50_coco_256x192-legacy_20200709.pth")


@pytest.fixture(scope="module")
def legacy_microsoft(reference, checkpoint_dir):
    state = OrderedDict((f"module.{key}", value) for key, value in reference.state_dict().items())
    return save_legacy(state, checkpoint_dir / "legacy_pose_resnet_50_256x192.pth.tar")


def test_legacy_fixtures_are_what_the_published_files_are(legacy_mmpose, legacy_microsoft):
    # Not zip; CUDA storages on cuda:0; numpy scalars and arrays under their numpy-1 names.
    for path in (legacy_mmpose, legacy_microsoft):
        assert not zipfile_like(path)
        names, locations = pickled_globals_and_locations(path)
        assert "torch.cuda FloatStorage" in names and "torch FloatStorage" not in names
        assert locations == {"cuda:0"}
    names, _ = pickled_globals_and_locations(legacy_mmpose)
    assert {"numpy.core.multiarray scalar", "numpy.core.multiarray _reconstruct", "numpy dtype"} <= names
    assert not any(name.startswith("numpy._core") for name in names)


def zipfile_like(path) -> bool:
    return path.read_bytes()[:2] == b"PK"


def test_legacy_gpu_checkpoints_read_exactly(legacy_mmpose, legacy_microsoft, reference):
    expected = {key: value.numpy() for key, value in reference.state_dict().items() if "num_batches" not in key}
    for path, layout in ((legacy_mmpose, "mmpose"), (legacy_microsoft, "microsoft")):
        state, found = weights.read_checkpoint(path)
        assert found == layout and state.keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_array_equal(state[key], value, err_msg=key)


def test_legacy_gpu_mmpose_checkpoint_converts_to_identical_heatmaps(legacy_mmpose, expected, batch, tmp_path, capsys):
    assert weights.main(["convert", str(legacy_mmpose), str(tmp_path / "legacy.weights.h5")]) == 0
    assert "SimpleBaseline-R50, 17 joints, 256x192" in capsys.readouterr().out
    assert_parity(tmp_path / "legacy.weights.h5", expected, batch)


def cut_points(data: bytes, path) -> list[int]:
    """30 places to cut a legacy file: 20 inside its pickles (where the unpickler trips over a cut),
    10 spread over the storage bytes after them."""
    import pickletools

    with open(path, "rb") as file:
        for _ in range(4):
            for _ in pickletools.genops(file):
                pass
        pickles_end = file.tell()
    inside = np.linspace(1, pickles_end, 20, dtype=int)
    after = np.linspace(pickles_end + 1, len(data) - 1, 10, dtype=int)
    return sorted({int(cut) for cut in np.concatenate([inside, after])})


def test_truncated_legacy_checkpoints_give_one_line_exit_5(legacy_mmpose, tmp_path, capsys):
    data = legacy_mmpose.read_bytes()
    cuts = cut_points(data, legacy_mmpose)
    assert len(cuts) == 30
    src = tmp_path / "res50_coco_256x192-cut.pth"
    for cut in cuts:
        src.write_bytes(data[:cut])
        code = weights.main(["convert", str(src), str(tmp_path / "out" / "cut.weights.h5")])
        err = capsys.readouterr().err
        assert code == WeightsError.exit_code, (cut, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (cut, err)
        assert "truncated or not a PyTorch checkpoint" in err and "could run code" not in err, (cut, err)
        assert not (tmp_path / "out").exists()


def test_every_cut_of_a_small_legacy_file_is_reported_as_truncated(tmp_path):
    # Every byte offset of a small legacy file with the same ingredients (CUDA storages, numpy-1
    # meta): the unpickler fails in a dozen ways (EOFError, IndexError, struct.error, a GLOBAL cut
    # mid-name that reads as an unknown global ...), each must come out as one WeightsError.
    small = save_legacy(
        {"meta": {"best": np.float64(0.7), "steps": np.array([1, 2])},
         "state_dict": OrderedDict(w=torch.randn(3, 2), b=torch.arange(4))},
        tmp_path / "small.pth",
    )
    data = small.read_bytes()
    assert weights._load_pickle(small)["meta"]["best"] == 0.7  # whole, it loads
    cut = tmp_path / "cut.pth"
    for size in range(len(data)):
        cut.write_bytes(data[:size])
        with pytest.raises(WeightsError) as error:
            weights._load_pickle(cut)
        message = str(error.value)
        assert "truncated or not a PyTorch checkpoint" in message and "\n" not in message, (size, message)


@pytest.mark.parametrize(
    "content, reason",
    [
        (os.urandom(4096), "is not pickle data|stops before its end"),
        (b"\x80\x02" + os.urandom(4096), "is not pickle data|stops before its end"),  # a pickle header, then noise
        (b"<html><body>503 Service Unavailable</body></html>\n", "text file"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ec54d7f3\nsize 102\n", "text file"),
        (b"", "empty"),
    ],
    ids=["random bytes", "pickle header + noise", "html page", "lfs pointer", "empty"],
)
def test_plain_corruption_is_reported_as_damage_not_as_code(content, reason, tmp_path, capsys):
    src = tmp_path / "broken.pth"
    src.write_bytes(content)
    assert weights.main(["convert", str(src), str(tmp_path / "b.weights.h5")]) == WeightsError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "truncated or not a PyTorch checkpoint" in err
    assert re.search(reason, err) and "could run code" not in err


def test_legacy_checkpoint_carrying_code_is_refused_as_code(reference, tmp_path):
    # The refusal still names what the pickle asked for when the format cannot be listed by torch.
    marker = tmp_path / "code_ran"
    src = save_legacy({"meta": RunsCode(marker), "state_dict": reference.state_dict()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match=r"could run code") as error:
        weights.read_checkpoint(src)
    assert "mkdir" in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize("size", ["250x190", "256x200", "0x0"])
def test_input_size_not_a_multiple_of_32_is_one_line(microsoft_checkpoint, size, tmp_path, capsys):
    code = weights.main(["convert", str(microsoft_checkpoint), str(tmp_path / "x.weights.h5"), "--input-size", size])
    assert code == WeightsError.exit_code
    err = capsys.readouterr().err
    assert err == f"error: --input-size {size}: both sides must be multiples of 32 (256x192, 384x288, ...)\n"
    assert converted_files(tmp_path) == []


def test_input_size_in_the_file_name_not_a_multiple_of_32_is_one_line(microsoft_checkpoint, tmp_path, capsys):
    src = tmp_path / "pose_resnet_50_250x190.pth"
    src.write_bytes(microsoft_checkpoint.read_bytes())
    assert weights.main(["convert", str(src), str(tmp_path / "x.weights.h5")]) == WeightsError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "input size 250x190" in err and "--input-size" in err
    # --input-size overrides the name.
    assert weights.main(["convert", str(src), str(tmp_path / "x.weights.h5"), "--input-size", "256x192"]) == 0


def test_joint_count_other_than_asked_is_refused(microsoft_checkpoint, tmp_path, capsys):
    code = weights.main(["convert", str(microsoft_checkpoint), str(tmp_path / "x.weights.h5"), "--joints", "5"])
    assert code == WeightsError.exit_code
    message = capsys.readouterr().err
    assert "17 joints, not the 5" in message and message.count("\n") == 1
    assert converted_files(tmp_path) == []


def test_unmapped_and_missing_keys_are_listed(reference, tmp_path):
    state = reference.state_dict()
    state["extra_head.weight"] = torch.zeros(3)
    del state["layer2.1.bn2.running_var"]
    src = tmp_path / "odd.pth"
    torch.save(state, src)
    with pytest.raises(WeightsError) as error:
        weights.convert(src, tmp_path / "odd.weights.h5")
    assert "extra_head.weight" in str(error.value)
    assert "layer2.1.bn2.running_var" in str(error.value)
    assert converted_files(tmp_path) == ["odd.pth"]


@pytest.mark.parametrize(
    "keys, reason",
    [
        ({"backbone.conv1.weight": (64, 3, 3, 3), "backbone.blocks.0.weight": (8, 8, 1, 1)}, "not a SimpleBaseline"),
        ({"layer1.0.conv1.weight": (64, 64, 3, 3), "layer1.0.conv2.weight": (64, 64, 3, 3),
          "final_layer.weight": (17, 256, 1, 1)}, "basic blocks"),
    ],
    ids=["unknown", "resnet18-like"],
)
def test_other_architectures_are_refused(keys, reason, tmp_path):
    src = tmp_path / "other.pth"
    torch.save({"state_dict": {key: torch.zeros(shape) for key, shape in keys.items()}}, src)
    with pytest.raises(WeightsError, match=reason):
        weights.convert(src, tmp_path / "other.weights.h5")


# --- loading -----------------------------------------------------------------------------------------

def test_weights_that_do_not_fit_their_description_raise_weights_error(converted, tmp_path):
    wrong = tmp_path / "wrong.weights.h5"
    wrong.write_bytes(converted.read_bytes())
    info = json.loads(weights.sidecar_path(converted).read_text())
    for field, value in (("num_joints", 5), ("depth", 101)):
        weights.sidecar_path(wrong).write_text(json.dumps({**info, field: value}))
        with pytest.raises(WeightsError, match="does not fit"):
            weights.load_pose_model(wrong)


def test_weights_without_sidecar_or_damaged_raise_weights_error(converted, tmp_path):
    lone = tmp_path / "lone.weights.h5"
    lone.write_bytes(converted.read_bytes())
    with pytest.raises(WeightsError, match="lone.json is missing"):
        weights.load_pose_model(lone)
    weights.sidecar_path(lone).write_text(weights.sidecar_path(converted).read_text())
    lone.write_bytes(b"not hdf5")
    with pytest.raises(WeightsError):
        weights.load_pose_model(lone)


def test_a_folder_in_place_of_the_sidecar_is_named_as_one(tmp_path, monkeypatch):
    """Reading a folder raises IsADirectoryError on Linux and macOS, PermissionError on Windows:
    both read "... is a folder", not "cannot read ... (Permission denied)"."""
    lone = tmp_path / "lone.weights.h5"
    weights.sidecar_path(lone).mkdir()
    with pytest.raises(WeightsError, match=r"lone\.json is a folder, not the weights description"):
        weights.read_sidecar(lone)

    def as_windows(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "read_text", as_windows)
    with pytest.raises(WeightsError, match=r"lone\.json is a folder, not the weights description"):
        weights.read_sidecar(lone)


def test_missing_weights_name_both_commands(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    assert weights.default_weights_path() is None
    for load in (weights.resolve_weights, weights.load_pose_model):
        for path in (None, tmp_path / "absent.weights.h5"):
            with pytest.raises(MissingWeightsError) as error:
                load(path)
            assert "python -m app.weights download" in str(error.value)
            assert "python -m app.weights convert" in str(error.value)


def test_default_weights_path_is_the_newest_with_a_sidecar(tmp_path):
    for age, name in enumerate(["new", "old"]):
        (tmp_path / f"{name}.weights.h5").write_bytes(b"x")
        (tmp_path / f"{name}.json").write_text("{}")
        os.utime(tmp_path / f"{name}.weights.h5", (1e9 - age, 1e9 - age))
    (tmp_path / "no_sidecar.weights.h5").write_bytes(b"x")
    assert weights.default_weights_path(tmp_path) == tmp_path / "new.weights.h5"


def test_names_give_stem_and_input_size():
    assert weights.checkpoint_stem(weights.Path("pose_resnet_50_384x288.pth.tar")) == "pose_resnet_50_384x288"
    assert weights.input_size_from_name("res152_coco_384x288-3860d4c9_20200709.pth") == (384, 288)
    assert weights.input_size_from_name("model_final.pth") is None
    assert weights.expected_sha256_prefix(weights.MODEL_ZOO["res50_coco_256x192"].url) == "ec54d7f3"


def test_names_say_udp_and_udps_regression_variant_is_refused():
    assert weights.udp_from_name("hrnet_w32_coco_256x192_udp-aba0be42_20210220.pth")
    assert weights.udp_from_name("td-hm_hrnet-w48_udp-8xb32-210e_coco-256x192-3a3d6e1a_20220913.pth")
    assert weights.udp_from_name("MY_MODEL.UDP.pth")
    assert not weights.udp_from_name("hrnet_w32_coco_256x192_dark-07f147eb_20200812.pth")
    assert not weights.udp_from_name("updated_udpose_256x192.pth")  # udp inside another word
    with pytest.raises(WeightsError, match="regression variant.*download hrnet_w32_coco_256x192_udp"):
        weights.udp_from_name("hrnet_w32_coco_256x192_udp_regress-be2dbba4_20210222.pth")


def test_a_udp_checkpoint_records_its_geometry_and_the_flag_overrides_the_name(
    reference, checkpoint_dir, expected, batch, tmp_path, capsys
):
    src = save_mmpose(reference, checkpoint_dir / "res50_coco_256x192_udp-00000000_20210220.pth")
    assert weights.main(["convert", str(src), str(tmp_path / "udp.weights.h5")]) == 0
    assert "SimpleBaseline-R50, 17 joints, 256x192, UDP" in capsys.readouterr().out
    assert json.loads((tmp_path / "udp.json").read_text())["udp"] is True
    assert weights.read_sidecar(tmp_path / "udp.weights.h5")["udp"] is True
    assert_parity(tmp_path / "udp.weights.h5", expected, batch)  # the same network, only the geometry differs
    assert weights.main(["convert", str(src), str(tmp_path / "plain.weights.h5"), "--no-udp"]) == 0
    assert "256x192)" in capsys.readouterr().out
    assert weights.read_sidecar(tmp_path / "plain.weights.h5")["udp"] is False


def test_a_sidecar_without_udp_is_not_udp_and_a_wrong_udp_is_refused(converted, tmp_path):
    info = json.loads(weights.sidecar_path(converted).read_text())
    info.pop("udp", None)  # as every file converted before UDP was read
    lone = tmp_path / "old.weights.h5"
    lone.write_bytes(b"x")
    weights.sidecar_path(lone).write_text(json.dumps(info))
    assert weights.read_sidecar(lone)["udp"] is False
    weights.sidecar_path(lone).write_text(json.dumps({**info, "udp": "yes"}))
    with pytest.raises(WeightsError, match=r"\(udp 'yes' is not true or false\); convert again"):
        weights.read_sidecar(lone)


# --- download ----------------------------------------------------------------------------------------

class Routes(dict):
    def __init__(self):
        super().__init__()
        self.requests = []


@pytest.fixture
def server():
    """A local HTTP server: routes maps a path to (body, Content-Length to announce); routes.requests
    lists every path asked for, in order."""
    routes = Routes()
    requests = routes.requests

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path not in routes:
                self.send_error(404)
                return
            body, length = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(body)  # fewer bytes than announced when a test cuts it short

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", routes
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_then_converts(server, checkpoint_dir, tmp_path):
    # A 5-joint model, so this also covers converting another joint count than COCO's 17.
    reference = randomized_pose_resnet(depth=50, num_joints=5, seed=3)
    data = save_mmpose(reference, checkpoint_dir / "five_joints.pth").read_bytes()
    base, routes = server
    name = f"res50_test_256x192-{hashlib.sha256(data).hexdigest()[:8]}_20240101.pth"
    routes[f"/{name}"] = (data, len(data))

    out = weights.download_url(f"{base}/{name}", tmp_path)

    stem = name.removesuffix(".pth")
    assert out == tmp_path / f"{stem}.weights.h5"
    assert converted_files(tmp_path) == sorted([name, f"{stem}.json", f"{stem}.weights.h5"])
    assert (tmp_path / name).read_bytes() == data
    info = weights.read_sidecar(out)
    assert info["source"] == f"{base}/{name}" and info["num_joints"] == 5
    batch = np.random.default_rng(2).standard_normal((1, 256, 192, 3)).astype(np.float32)
    assert_parity(out, torch_heatmaps(reference, batch), batch)


def test_download_with_wrong_checksum_is_kept_unverified_and_not_fetched_again(server, checkpoint_dir, tmp_path, capsys):
    base, routes = server
    zoo_name = weights.MODEL_ZOO["res50_coco_256x192"].url.rsplit("/", 1)[1]
    reference = randomized_pose_resnet(depth=50, num_joints=17, seed=4)
    data = save_mmpose(reference, checkpoint_dir / "unverified.pth").read_bytes()
    assert not hashlib.sha256(data).hexdigest().startswith("ec54d7f3")
    routes[f"/{zoo_name}"] = (data, len(data))
    command = ["download", "res50_coco_256x192", "--url", base, "--dir", str(tmp_path)]

    assert weights.main(command) == DownloadError.exit_code
    err = capsys.readouterr().err
    sha = hashlib.sha256(data).hexdigest()
    assert err.count("\n") == 1
    assert f"has sha256 {sha[:8]}..., but its name says ec54d7f3..." in err
    assert f"kept as {tmp_path / (zoo_name + '.unverified')}, not converted" in err
    assert "rerun the same download command with --accept-unverified" in err
    assert converted_files(tmp_path) == [zoo_name + ".unverified"]
    assert (tmp_path / (zoo_name + ".unverified")).read_bytes() == data
    assert routes.requests == [f"/{zoo_name}"]

    # Again: the same line, from the file kept, without a second download.
    assert weights.main(command) == DownloadError.exit_code
    assert "already downloaded" in capsys.readouterr().err
    assert routes.requests == [f"/{zoo_name}"]

    # Accepted: the kept file is converted, still without a download.
    assert weights.main(command + ["--accept-unverified"]) == 0
    stem = zoo_name.removesuffix(".pth")
    assert converted_files(tmp_path) == sorted([zoo_name, f"{stem}.json", f"{stem}.weights.h5"])
    assert routes.requests == [f"/{zoo_name}"]
    assert weights.read_sidecar(tmp_path / f"{stem}.weights.h5")["source_sha256"] == sha
    # And later downloads reuse the accepted file.
    assert weights.main(command + ["--accept-unverified"]) == 0
    assert routes.requests == [f"/{zoo_name}"]


def test_accept_unverified_up_front_converts_the_fresh_download(server, checkpoint_dir, tmp_path):
    base, routes = server
    reference = randomized_pose_resnet(depth=50, num_joints=3, seed=5)
    data = save_mmpose(reference, checkpoint_dir / "three.pth").read_bytes()
    name = "res50_test_256x192-0badc0de_20240101.pth"
    routes[f"/{name}"] = (data, len(data))
    out = weights.download_url(f"{base}/{name}", tmp_path, accept_unverified=True)
    assert weights.read_sidecar(out)["num_joints"] == 3
    assert not (tmp_path / (name + ".unverified")).exists()


def test_damaged_download_is_kept_unverified_then_refused_as_damage(server, tmp_path, capsys):
    # A server that sends an error page with status 200: the checksum catches it, and accepting it
    # anyway ends in the converter's one-line refusal, not a traceback.
    base, routes = server
    zoo_name = weights.MODEL_ZOO["res50_coco_256x192"].url.rsplit("/", 1)[1]
    routes[f"/{zoo_name}"] = (b"not the published checkpoint", 28)
    with pytest.raises(DownloadError, match="ec54d7f3"):
        weights.download("res50_coco_256x192", tmp_path, base_url=base)
    assert converted_files(tmp_path) == [zoo_name + ".unverified"]
    command = ["download", "--url", base, "--dir", str(tmp_path), "--accept-unverified"]
    assert weights.main(command) == WeightsError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "it is a text file" in err


def test_download_cut_short_leaves_nothing(server, tmp_path):
    base, routes = server
    body = b"x" * 5000
    routes["/short-0123abcd_1.pth"] = (body, len(body) + 10_000)
    with pytest.raises(DownloadError, match="5000 of 15000 bytes"):
        weights.fetch(f"{base}/short-0123abcd_1.pth", tmp_path)
    assert converted_files(tmp_path) == []


def test_missing_file_on_server_is_a_download_error(server, tmp_path):
    base, _ = server
    with pytest.raises(DownloadError, match="404"):
        weights.fetch(f"{base}/gone-0123abcd_1.pth", tmp_path)
    assert converted_files(tmp_path) == []


def test_offline_fails_at_once_with_the_manual_route(tmp_path, capsys):
    with socket.socket() as probe:  # a port nobody listens on: bound, then released
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = weights.main(["download", "--url", f"http://127.0.0.1:{port}", "--dir", str(tmp_path), "--timeout", "3"])
    assert code == DownloadError.exit_code
    message = capsys.readouterr().err
    assert "python -m app.weights convert" in message and message.count("\n") == 1
    assert converted_files(tmp_path) == []


def test_unreadable_checkpoint_is_one_line(microsoft_checkpoint, tmp_path, capsys, monkeypatch):
    # As torch.load fails on a file without read permission (simulated: the tests may run as root).
    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(torch, "load", denied)
    assert weights.main(["convert", str(microsoft_checkpoint), str(tmp_path / "x.weights.h5")]) == WeightsError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "permission denied" in err


def test_every_zoo_entry_names_its_file_size_and_checksum():
    """A typo in MODEL_ZOO would send users a wrong file or a wrong input size: each entry's file is
    named after the entry, carries a checksum prefix, and its HxW is the entry's input size; the UDP
    ones are read as UDP from their names, the others not."""
    for name, entry in weights.MODEL_ZOO.items():
        file_name = entry.url.rsplit("/", 1)[1]
        assert file_name.startswith(name + "-"), (name, file_name)
        assert re.fullmatch(r"[0-9a-f]{8}", weights.expected_sha256_prefix(entry.url))
        assert weights.input_size_from_name(file_name) == entry.input_size, name
        assert weights.udp_from_name(file_name) == name.endswith("_udp"), name
        assert 0.6 < entry.coco_ap < 0.8, name


# --- issue 21: the converter's own refusals and messages ---------------------------------------------

from pathlib import Path  # noqa: E402

from app.errors import OutputError  # noqa: E402


def test_convert_refuses_an_existing_destination_without_overwrite(microsoft_checkpoint, tmp_path, capsys):
    dst = tmp_path / "mine.weights.h5"
    dst.write_bytes(b"keep me")
    assert weights.main(["convert", str(microsoft_checkpoint), str(dst)]) == OutputError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{dst} already exists; pass --overwrite" in err
    assert dst.read_bytes() == b"keep me"
    assert weights.main(["convert", str(microsoft_checkpoint), str(dst), "--overwrite"]) == 0
    assert dst.read_bytes().startswith(b"\x89HDF")


def test_convert_on_a_folder_says_folder(tmp_path, capsys):
    assert weights.main(["convert", str(tmp_path), str(tmp_path / "x.weights.h5")]) == WeightsError.exit_code
    assert f"checkpoint {tmp_path} is a folder" in capsys.readouterr().err


def test_a_plain_pickle_with_a_payload_is_refused_as_code_not_as_truncated(tmp_path, capsys):
    import pickle

    marker = tmp_path / "code_ran"
    src = tmp_path / "evil.pth"
    src.write_bytes(pickle.dumps({"state_dict": RunsCode(marker)}))
    assert weights.main(["convert", str(src), str(tmp_path / "evil.weights.h5")]) == WeightsError.exit_code
    err = capsys.readouterr().err
    assert "could run code" in err and "posix.mkdir" in err and "truncated" not in err
    assert not marker.exists()


def test_a_checkpoint_without_final_layer_names_that_key(reference, tmp_path):
    src = tmp_path / "headless.pth"
    torch.save({key: value for key, value in reference.state_dict().items() if not key.startswith("final_layer")}, src)
    with pytest.raises(WeightsError, match=r"it has no final_layer\.weight\)") as error:
        weights.convert(src, tmp_path / "headless.weights.h5")
    assert "layer1.0.conv1" not in str(error.value)


def test_an_all_nan_checkpoint_converts_with_a_warning(reference, tmp_path, capsys):
    src = tmp_path / "nan.pth"
    torch.save({key: torch.full_like(value, float("nan")) if value.is_floating_point() else value
                for key, value in reference.state_dict().items()}, src)
    weights.convert(src, tmp_path / "nan.weights.h5")
    err = capsys.readouterr().err
    assert "warning:" in err and "weights are NaN or infinite (all of them)" in err


def test_convert_onto_a_full_disk_is_one_line_and_leaves_nothing(microsoft_checkpoint, tmp_path, capsys):
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        code = weights.main(["convert", str(microsoft_checkpoint), str(disk / "r50.weights.h5")])
        err = capsys.readouterr().err
        assert code == OutputError.exit_code and err.count("\n") == 1 and err.startswith("error: disk full: ")
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_failed_write_during_convert_removes_the_partial_file(microsoft_checkpoint, tmp_path, monkeypatch):
    """The space check cannot see another program filling the disk: a write that fails is caught."""
    import errno

    from app.weights import conversion

    def save_half_then_fail(self, path, *args, **kwargs):
        Path(path).write_bytes(b"\x89HDF half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save_weights", save_half_then_fail)
    with pytest.raises(OutputError, match=r"^disk full: cannot write .* nothing was written"):
        conversion.convert(microsoft_checkpoint, tmp_path / "r50.weights.h5")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, message", [
    (b"", "is empty (0 bytes)"),
    (b"PK\x03\x04" + b"\0" * 100, "looks like a PyTorch checkpoint, not converted Keras weights; convert it"),
    (b"\x80\x02" + b"\0" * 100, "looks like a PyTorch checkpoint, not converted Keras weights; convert it"),
    (bytes(range(256)) * 10, "is not a Keras weights file (no HDF5 signature)"),
])
def test_a_weights_file_that_is_not_keras_weights_says_what_it_is(converted, tmp_path, content, message):
    odd = tmp_path / "odd.weights.h5"
    odd.write_bytes(content)
    weights.sidecar_path(odd).write_text(weights.sidecar_path(converted).read_text())
    with pytest.raises(WeightsError, match=re.escape(message)):
        weights.resolve_weights(odd)


def test_convert_prints_one_line_and_no_tensorflow_start_up_noise(microsoft_checkpoint, tmp_path):
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    completed = subprocess.run([sys.executable, "-m", "app.weights", "convert", str(microsoft_checkpoint),
                                str(tmp_path / "r50.weights.h5")], cwd=Path(__file__).resolve().parents[1],
                               env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.count("\n") == 1 and completed.stdout.startswith("wrote ")
    assert completed.stderr == ""


# --- MMPose 1.x ----------------------------------------------------------------------------------------

def test_mmpose_1x_keys_read_as_the_same_tensors_for_every_network(tmp_path):
    """MMPose 1.x renamed keypoint_head to head: its checkpoints of R50, MobileNetV2 and HRNet give the
    Microsoft-layout state of the same network, tensor for tensor, through the safe loader (1.x's
    meta holds numpy arrays)."""
    from hrnet_reference import PoseHighResolutionNet
    from mobilenet_reference import PoseMobileNetV2
    from torch_reference import mmpose_checkpoint

    for name, network, head_keys in (
        ("r50", randomized_pose_resnet(depth=50, num_joints=17, seed=0), ("deconv_layers.", "final_layer.")),
        ("mobilenetv2", PoseMobileNetV2(), ("deconv_layers.", "final_layer.")),
        ("hrnet", PoseHighResolutionNet(32), ("final_layer.",)),
    ):
        src = tmp_path / f"td-hm_{name}_8xb64-210e_coco-256x192-00000000_20220923.pth"
        torch.save(mmpose_checkpoint(network.state_dict(), head_keys, "1.x"), src)
        state, layout = weights.read_checkpoint(src)
        expected = {key: value.numpy() for key, value in network.state_dict().items()
                    if not key.endswith("num_batches_tracked")}
        assert layout == "mmpose" and state.keys() == expected.keys(), name
        for key, value in expected.items():
            np.testing.assert_array_equal(state[key], value, err_msg=f"{name} {key}")
        assert weights.infer_network(state)["backbone"] == {"r50": "resnet"}.get(name, name)


def test_mmpose_1x_data_preprocessor_is_checked_then_dropped(tmp_path):
    """Some MMPose 1.x training checkpoints keep the input normalisation (data_preprocessor.mean and
    .std of 0-255 RGB): ImageNet's, which the product uses, are dropped; others are refused, as they
    would give wrong keypoints without a word."""
    from torch_reference import mmpose_checkpoint

    network = randomized_pose_resnet(depth=50, num_joints=17, seed=0)
    checkpoint = mmpose_checkpoint(network.state_dict(), ("deconv_layers.", "final_layer."), "1.x")
    checkpoint["state_dict"]["data_preprocessor.mean"] = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    checkpoint["state_dict"]["data_preprocessor.std"] = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    torch.save(checkpoint, tmp_path / "imagenet.pth")
    state, _ = weights.read_checkpoint(tmp_path / "imagenet.pth")
    assert not any("data_preprocessor" in key for key in state)
    assert weights.infer_network(state)["backbone"] == "resnet"

    checkpoint["state_dict"]["data_preprocessor.std"] = torch.tensor([1.0, 1.0, 1.0]).view(3, 1, 1)
    torch.save(checkpoint, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match=r"data_preprocessor.std is \[1.0, 1.0, 1.0\], not ImageNet's"):
        weights.read_checkpoint(tmp_path / "other.pth")


def test_an_mmengine_training_checkpoint_is_refused_with_the_way_to_publish_it(tmp_path, monkeypatch):
    """MMEngine's training checkpoints carry its log (HistoryBuffer objects) beside the weights: refused,
    unread, with the MMPose tool that strips them. Saved here under a stand-in module of that name."""
    import sys
    import types

    module = types.ModuleType("mmengine.logging.history_buffer")

    class HistoryBuffer:
        def __init__(self):
            self._log_history = [0.5, 0.4]

    HistoryBuffer.__module__, HistoryBuffer.__qualname__ = module.__name__, "HistoryBuffer"
    module.HistoryBuffer = HistoryBuffer
    for name in ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer"):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name, types.ModuleType(name)))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    network = randomized_pose_resnet(depth=50, num_joints=17, seed=0)
    checkpoint = {"meta": {}, "state_dict": {"backbone." + k: v for k, v in network.state_dict().items()},
                  "message_hub": {"log_scalars": {"train/loss": HistoryBuffer()}}}
    torch.save(checkpoint, tmp_path / "epoch_210.pth")
    with pytest.raises(WeightsError) as error:
        weights.read_checkpoint(tmp_path / "epoch_210.pth")
    message = str(error.value)
    assert "is an MMEngine training checkpoint (mmengine.logging.history_buffer.HistoryBuffer)" in message
    assert "tools/misc/publish_model.py" in message and "\n" not in message
