"""SimpleBaseline-MobileNetV2 (models/mobilenet_v2.py): what a state holds, its label, building it.

MMPose's `mobilenetv2_coco_*` (mmcv ConvModules): `conv1.conv.weight`, `layer1.0.conv.0.conv.weight`,
..., `conv2.conv`, `deconv_layers.*`, `final_layer`.
"""

from __future__ import annotations

import numpy as np

from app.errors import WeightsError

# MobileNetV2 width multipliers whose channel counts infer_network recognises (MMPose's zoo has 1.0).
MOBILENETV2_WIDEN_FACTORS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)

def infer(state: dict[str, np.ndarray], source: str) -> dict:
    """{"backbone": "mobilenetv2", "widen_factor": 1.0, "num_joints": 17}, its stage layout checked."""
    from models.mobilenet_v2 import ARCH_SETTINGS, MobileNetV2Config

    if "final_layer.weight" not in state or "conv2.conv.weight" not in state:
        raise WeightsError(f"{source} is a MobileNetV2 without conv2 / final_layer; not a SimpleBaseline-MobileNetV2 "
                           "(MMPose 'mobilenetv2_coco') checkpoint")

    def blocks(stage: int) -> int:
        return len({key.split(".")[1] for key in state if key.startswith(f"layer{stage}.")})

    found = tuple(blocks(stage) for stage in range(1, len(ARCH_SETTINGS) + 1))
    expected = tuple(setting[2] for setting in ARCH_SETTINGS)
    if found != expected or f"layer{len(ARCH_SETTINGS) + 1}.0.conv.0.conv.weight" in state:
        raise WeightsError(f"{source} has {found} MobileNetV2 blocks per stage, not MobileNetV2's {expected}")

    def stage_out(stage: int) -> int:
        # The last module of the stage's first block, its linear 1x1 projection.
        last = max(int(key.split(".")[3]) for key in state if key.startswith(f"layer{stage}.0.conv."))
        return int(state[f"layer{stage}.0.conv.{last}.conv.weight"].shape[0])

    widths = (int(state["conv1.conv.weight"].shape[0]), *(stage_out(s) for s in range(1, len(ARCH_SETTINGS) + 1)),
              int(state["conv2.conv.weight"].shape[0]))
    for widen_factor in MOBILENETV2_WIDEN_FACTORS:
        if MobileNetV2Config(widen_factor=widen_factor).stage_channels == widths:
            return {"backbone": "mobilenetv2", "widen_factor": widen_factor,
                    "num_joints": int(state["final_layer.weight"].shape[0])}
    raise WeightsError(f"{source} has MobileNetV2 channel widths {widths}, which match no width multiplier in "
                       f"{MOBILENETV2_WIDEN_FACTORS}")


def label(info: dict) -> str:
    """'SimpleBaseline-MobileNetV2', with ' x0.5' when widened."""
    widen = float(info.get("widen_factor", 1.0))
    return "SimpleBaseline-MobileNetV2" + ("" if widen == 1.0 else f" x{widen:g}")


def build(info: dict, input_size: tuple[int, int]) -> keras.Model:
    """The Keras network of a sidecar description, fresh weights."""
    from models.mobilenet_v2 import build_pose_mobilenet_v2

    return build_pose_mobilenet_v2(int(info["num_joints"]), input_size, float(info.get("widen_factor", 1.0)))


def fields(info: dict) -> dict:
    """The sidecar fields that fix the architecture; KeyError / ValueError / TypeError when bad."""
    widen_factor = float(info.get("widen_factor", 1.0))
    if not widen_factor > 0:
        raise ValueError(f"widen_factor {widen_factor} is not positive")
    return {"backbone": "mobilenetv2", "widen_factor": widen_factor}
