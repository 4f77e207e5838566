"""SimpleBaseline-ResNet (models/simple_baseline.py): what a state holds, its label, building it.

Microsoft's pose_resnet and MMPose's res*_coco: `conv1`, `layer1.0.conv1`..`conv3` (bottlenecks),
`deconv_layers.*`, `final_layer`.
"""

from __future__ import annotations

import numpy as np

from app.errors import WeightsError


def infer_architecture(state: dict[str, np.ndarray], source: str = "checkpoint") -> tuple[int, int]:
    """(depth, num_joints) of a Microsoft-layout state: blocks per stage, final layer's outputs."""
    from models.simple_baseline import BLOCKS_PER_STAGE

    absent = [key for key in ("layer1.0.conv1.weight", "final_layer.weight") if key not in state]
    if absent:
        raise WeightsError(
            f"{source} is not a SimpleBaseline ResNet or MobileNetV2 checkpoint (it has no "
            f"{' and no '.join(absent)}); only PoseResNet-50/101/152 (MMPose 'res*_coco' or Microsoft "
            "'pose_resnet') and MMPose 'mobilenetv2_coco' convert"
        )
    if "layer1.0.conv3.weight" not in state:
        raise WeightsError(f"{source} uses ResNet basic blocks (ResNet-18/34); only ResNet-50/101/152 convert")

    def blocks(stage: int) -> int:
        return len({key.split(".")[1] for key in state if key.startswith(f"layer{stage}.")})

    found = (blocks(1), blocks(2), blocks(3), blocks(4))
    depths = [depth for depth, layout in BLOCKS_PER_STAGE.items() if layout == found]
    if not depths:
        raise WeightsError(f"{source} has {found} blocks per stage, not a ResNet-50/101/152 layout")
    return depths[0], int(state["final_layer.weight"].shape[0])


def infer(state: dict[str, np.ndarray], source: str) -> dict:
    """{"backbone": "resnet", "depth": 50, "num_joints": 17} of a Microsoft-layout state."""
    depth, joints = infer_architecture(state, source=source)
    return {"backbone": "resnet", "depth": depth, "num_joints": joints}


def label(info: dict) -> str:
    """'SimpleBaseline-R50'."""
    return f"SimpleBaseline-R{info['depth']}"


def build(info: dict, input_size: tuple[int, int]) -> keras.Model:
    """The Keras network of a sidecar description, fresh weights."""
    from models.simple_baseline import build_simple_baseline

    return build_simple_baseline(int(info["depth"]), int(info["num_joints"]), input_size)


# The depths models.simple_baseline.BLOCKS_PER_STAGE builds (not imported here: that imports Keras,
# and a sidecar is read before anything heavy loads; tests/test_safety.py checks they agree).
DEPTHS = (50, 101, 152)


def fields(info: dict) -> dict:
    """The sidecar fields that fix the architecture; KeyError / ValueError / TypeError when bad."""
    depth = int(info["depth"])
    if depth not in DEPTHS:
        raise ValueError(f"depth {depth} is not one of the ResNets built here ({', '.join(map(str, DEPTHS))})")
    return {"backbone": "resnet", "depth": depth}
