"""Finding and loading a converted model: the newest in weights/, or one network by its short name."""

from __future__ import annotations

import warnings
from pathlib import Path

from app.errors import MissingWeightsError, WeightsError
from app.weights.checkpoint import _first_line
from app.weights.files import CONVERT_HINT, DOWNLOAD_HINT, KERAS_SUFFIX, weights_dir
from app.weights.networks import build_network, network_label
from app.weights.sidecar import read_sidecar, sidecar_path


# Short names for `run_demo.py --model`: the network (matched against each sidecar, never a file
# name) and the zoo checkpoint that provides it.
MODEL_SHORTHANDS = {
    "r50": ({"backbone": "resnet", "depth": 50}, "res50_coco_256x192"),
    "mobilenetv2": ({"backbone": "mobilenetv2"}, "mobilenetv2_coco_256x192"),
    "hrnet-w32": ({"backbone": "hrnet", "width": 32}, "hrnet_w32_coco_256x192"),
    "hrnet-w48": ({"backbone": "hrnet", "width": 48}, "hrnet_w48_coco_256x192"),
}


def _is_model(weights_path: Path, model: str) -> bool:
    """Whether the sidecar of `weights_path` describes the network MODEL_SHORTHANDS[model] names."""
    try:
        info = read_sidecar(weights_path)
    except WeightsError:
        return False
    wanted, _ = MODEL_SHORTHANDS[model]
    return all(info.get(key) == value for key, value in wanted.items())


def default_weights_path(folder: str | Path | None = None, model: str | None = None) -> Path | None:
    """The newest converted model in `folder` (default weights/): a .weights.h5 with its JSON, or None.

    model: a MODEL_SHORTHANDS name, to pick the newest of that network only.
    """
    folder = Path(folder) if folder is not None else weights_dir()
    if not folder.is_dir():
        return None
    candidates = [
        path for path in folder.glob("*" + KERAS_SUFFIX)
        if not path.name.startswith(".") and sidecar_path(path).is_file()
        and (model is None or _is_model(path, model))
    ]
    return max(candidates, key=lambda path: path.stat().st_mtime, default=None)



def resolve_weights(path: str | Path | None = None, model: str | None = None) -> Path:
    """The converted weights file to use, checked without loading it (cheap: for early CLI errors).

    path None means the newest converted model in weights/, of the network `model` names when given
    (a MODEL_SHORTHANDS key: "r50", "mobilenetv2", "hrnet-w32", "hrnet-w48"). Raises MissingWeightsError (naming the download
    and convert commands) when there is none, WeightsError when its JSON is missing or bad or, with
    both path and model, describes another network.
    """
    if model is not None and model not in MODEL_SHORTHANDS:
        raise WeightsError(f"unknown model {model!r}; choose one of: {', '.join(MODEL_SHORTHANDS)}")
    if path is None:
        path = default_weights_path(model=model)
        if path is None:
            download = DOWNLOAD_HINT + (f" {MODEL_SHORTHANDS[model][1]}" if model else "")
            raise MissingWeightsError(
                f"no converted {model + ' ' if model else ''}pose weights in {weights_dir()}; "
                f"run `{download}` or `{CONVERT_HINT}`"
            )
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"no pose weights at {path}; run `{DOWNLOAD_HINT}` or `{CONVERT_HINT}`")
    info = read_sidecar(path)
    check_keras_file(path)
    if model is not None and not _is_model(path, model):
        raise WeightsError(f"{path} holds {network_label(info)}, not the {model} asked for; give --weights or --model, not both")
    return path


def load_pose_model(path: str | Path | None = None) -> keras.Model:
    """The pose network (SimpleBaseline or HRNet) in Keras with trained weights.

    path is a converted `.weights.h5` (its JSON sidecar says backbone, joints and input size); None
    means the newest converted model in weights/. Raises MissingWeightsError when there is none,
    WeightsError when the file does not fit its description.
    """
    path = resolve_weights(path)
    info = read_sidecar(path)
    model = build_network(info)
    mismatch = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except Exception as error:  # h5py and Keras raise several types for a wrong or damaged file
            mismatch = _short_reason(error)
    for warning in caught:
        # Keras only warns when a part of the file has no matching layer and leaves that part at
        # its random initial values: for inference that is as wrong as a shape error.
        if mismatch is None and "freshly-initialized" in str(warning.message):
            mismatch = str(warning.message).split(". ")[0]
        elif "freshly-initialized" not in str(warning.message):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if mismatch is not None:
        raise WeightsError(
            f"{path} does not fit {network_label(info)} with {info['num_joints']} joints "
            f"({mismatch}); convert the checkpoint again: {CONVERT_HINT}"
        )
    return model


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first 8 bytes of every HDF5 file (Keras .weights.h5)


def check_keras_file(path: Path) -> None:
    """WeightsError naming what `path` is when it is not Keras weights at all: empty, a PyTorch
    checkpoint saved under the name (zip or pickle: convert it), or other bytes. Reads 8 bytes."""
    try:
        with open(path, "rb") as file:
            head = file.read(8)
    except OSError as error:
        raise WeightsError(f"cannot read {path} ({error.strerror}); check the file's permissions") from None
    if not head:
        raise WeightsError(f"{path} is empty (0 bytes); convert the checkpoint again: {CONVERT_HINT}")
    if head.startswith(HDF5_SIGNATURE):
        return
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save's zip, or a pickle
        raise WeightsError(f"{path} looks like a PyTorch checkpoint, not converted Keras weights; convert it: "
                           f"python -m app.weights convert {path} OUT{KERAS_SUFFIX}")
    raise WeightsError(f"{path} is not a Keras weights file (no HDF5 signature); convert the checkpoint "
                       f"again: {CONVERT_HINT}")


def _short_reason(error: Exception) -> str:
    """One line out of Keras' multi-line load errors: the count, and the first shape it tripped on."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = _first_line(error).rstrip(":")
    shapes = next((line for line in lines[1:] if "variable.shape=" in line), None)
    if shapes:
        reason += " " + shapes.split(" Target variable")[0]
    return reason

