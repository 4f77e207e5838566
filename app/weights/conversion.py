"""Converting a PyTorch checkpoint into `<name>.weights.h5` (Keras) and its JSON sidecar."""

from __future__ import annotations

import errno
import json
import re
import shutil
import sys
from pathlib import Path

from app.atomic import write_atomically
from app.errors import OutputError, WeightsError
from app.weights.checkpoint import read_checkpoint
from app.weights.files import KERAS_SUFFIX, sha256_of, weights_dir
from app.weights.mapping import assign_state
from app.weights.networks import build_network, infer_network
from app.weights.sidecar import sidecar_path

DEFAULT_INPUT_SIZE = (256, 192)


def checkpoint_stem(path: Path) -> str:
    """'res50_coco_256x192-ec54d7f3_20200709.pth' -> 'res50_coco_256x192-ec54d7f3_20200709';
    'pose_resnet_50_256x192.pth.tar' -> 'pose_resnet_50_256x192'."""
    name = path.name
    for suffix in (".tar", ".pth", ".pt", ".pkl", ".ckpt", ".bin"):
        name = name.removesuffix(suffix)
    return name


def input_size_from_name(name: str) -> tuple[int, int] | None:
    """(H, W) from an 'HxW' in a checkpoint name (both zoos name files this way), else None.

    Raises WeightsError when that size is not a multiple of 32 (the network cannot be built for it).
    """
    sizes = {(int(h), int(w)) for h, w in re.findall(r"(?<!\d)(\d{2,4})x(\d{2,4})(?!\d)", name)}
    if len(sizes) != 1:
        return None
    size = sizes.pop()
    problem = input_size_problem(size)
    if problem:
        raise WeightsError(f"{name} names the input size {size[0]}x{size[1]}, but {problem}; "
                           "give the size the model was trained at with --input-size HxW")
    return size


def input_size_problem(size: tuple[int, int]) -> str | None:
    """Why a SimpleBaseline cannot be built for (H, W), or None: the backbone divides by 32 and the
    deconvolutions multiply back by 8, so both sides must be positive multiples of 32."""
    height, width = size
    if height <= 0 or width <= 0 or height % 32 or width % 32:
        return "both sides must be multiples of 32 (256x192, 384x288, ...)"
    return None



def udp_from_name(name: str) -> bool:
    """Whether a checkpoint's file name says it was trained with UDP: MMPose names them
    `hrnet_w32_coco_256x192_udp-aba0be42_20210220.pth` (0.x) and `td-hm_hrnet-w32_udp-8xb64-...` (1.x).

    Raises WeightsError for UDP's regression variant (`..._udp_regress-...`): its head predicts an
    offset map beside each heatmap (MMPose's CombinedTarget, 3 channels a joint), which no decoder
    here reads; converted as heatmaps its keypoints would be wrong without a word.
    """
    tokens = re.split(r"[^a-z0-9]+", name.lower())
    if "udp" in tokens and "regress" in tokens:
        raise WeightsError(f"{name} is UDP's regression variant (offset maps beside the heatmaps), which "
                           "this demo cannot decode; use the heatmap one, e.g. "
                           "`python -m app.weights download hrnet_w32_coco_256x192_udp`")
    return "udp" in tokens


def convert(
    src: str | Path,
    dst: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    num_joints: int | None = None,
    source: str | None = None,
    overwrite: bool = True,
    udp: bool | None = None,
) -> Path:
    """Convert a PyTorch SimpleBaseline checkpoint into `dst` (a .weights.h5) and its JSON sidecar.

    dst defaults to weights/<checkpoint stem>.weights.h5. input_size (H, W) defaults to the 'HxW' in
    the file name, else 256 x 192 (the network is fully convolutional; the size only fixes the
    Keras input). num_joints, when given, must match the checkpoint. source is what the sidecar
    records as the origin (a URL for downloads), the path by default. overwrite False: OutputError
    when dst or its sidecar exists (the command line's default). udp: the checkpoint was trained with
    UDP's geometry (recorded in the sidecar; app.pose then crops and decodes as it was trained);
    None: when its file name says so (udp_from_name), as MMPose names them. Returns dst.

    A checkpoint holding NaN or infinite weights converts with a warning on stderr. The disk must
    hold the weights (float32) and a margin: else, and when a write fails, OutputError "disk full"
    and no file (h5py may crash the process on a write that fails half-way, so space is checked
    before writing, not only caught).
    """
    src = Path(src)
    dst = Path(dst) if dst is not None else weights_dir() / (checkpoint_stem(src) + KERAS_SUFFIX)
    if not dst.name.endswith(KERAS_SUFFIX):
        raise WeightsError(f"output {dst} must end in {KERAS_SUFFIX} (the Keras weights format)")
    input_size = tuple(input_size or input_size_from_name(src.name) or DEFAULT_INPUT_SIZE)
    udp = udp_from_name(src.name) if udp is None else bool(udp)
    if dst.is_dir():
        raise OutputError(f"{dst} is a folder; give a file name ending in {KERAS_SUFFIX}")
    if not overwrite and (existing := [p for p in (dst, sidecar_path(dst)) if p.exists()]):
        raise OutputError(f"{existing[0]} already exists; pass --overwrite to replace it")

    state, layout = read_checkpoint(src)
    _warn_non_finite(state, src)
    network = infer_network(state, source=str(src))  # from the keys, never from the file name
    if num_joints is not None and num_joints != network["num_joints"]:
        raise WeightsError(f"{src} predicts {network['num_joints']} joints, not the {num_joints} asked for")

    model = build_network(network, input_size)
    assign_state(model, state, source=str(src))
    info = {
        "source": source or str(src.resolve()),
        "source_sha256": sha256_of(src),
        "layout": layout,
        **network,
        "input_size": list(input_size),
        "udp": udp,
    }
    _check_space(dst, sum(value.size * 4 for value in state.values()))
    try:
        write_atomically(dst, model.save_weights, make_folder=True)
        write_atomically(sidecar_path(dst), lambda temp: temp.write_text(json.dumps(info, indent=2) + "\n"))
    except OSError as error:  # write_atomically has removed its partial file
        what = "disk full: " if error.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise OutputError(f"{what}cannot write {dst} ({error.strerror or error}); nothing was written; "
                          "free some space or choose another destination") from None
    return dst


def _warn_non_finite(state: dict, src: Path) -> None:
    """A warning line when weights are NaN or infinite: such a model outputs NaN heatmaps."""
    import numpy as np

    total = sum(value.size for value in state.values())
    bad = sum(int(np.count_nonzero(~np.isfinite(value))) for value in state.values())
    if bad:
        print(f"warning: {src}: {bad} of {total} weights are NaN or infinite "
              f"({'all of them' if bad == total else 'a damaged or diverged checkpoint'}); "
              "the converted model will output nothing useful", file=sys.stderr)


def _check_space(dst: Path, weight_bytes: int) -> None:
    """OutputError "disk full" when dst's disk cannot hold `weight_bytes` plus HDF5's overhead."""
    folder = dst.parent if dst.parent.is_dir() else Path(".")
    try:
        free = shutil.disk_usage(folder).free  # statvfs's f_bavail * f_frsize; Windows has no statvfs
    except OSError:
        return
    needed = int(weight_bytes * 1.1) + (1 << 20)
    if free < needed:
        raise OutputError(f"disk full: {dst} needs about {needed // (1 << 20)} MiB and {folder} has "
                          f"{free // (1 << 20)} MiB free; nothing was written; free some space or choose "
                          "another destination")

