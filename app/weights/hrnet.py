"""HRNet-W32 / W48 (models/hrnet.py): what a state holds, its label, building it.

The HRNet authors' pose_hrnet_w32_256x192.pth (a bare state_dict) and MMPose 0.x's hrnet_w32_coco_*
(`backbone.*` + `keypoint_head.final_layer.*`) share module names once checkpoint.normalize_state_dict
has taken off the prefixes: `conv1`, `bn1`, `conv2`, `bn2`, `layer1.*`, `transition1..3.*`,
`stage2..4.<module>.branches.<branch>.<block>.*`, `stage*.*.fuse_layers.*`, `final_layer`.
"""

from __future__ import annotations

import re

import numpy as np

from app.errors import WeightsError


def is_hrnet(state: dict[str, np.ndarray]) -> bool:
    """Whether a Microsoft-layout state looks like an HRNet (its transition or multi-branch stage keys)."""
    return any(key.startswith(("transition1.", "stage2.")) for key in state)


def _stage_layout(state: dict[str, np.ndarray], stage: int) -> tuple[tuple[int, ...], ...]:
    """Per module of stageN: the channels of each BasicBlock of each branch, as found in the keys.

    ((32, 32, 32, 32), (64, 64, 64, 64)) for W32's single stage-2 module: two branches of 4 blocks.
    """
    pattern = re.compile(rf"stage{stage}\.(\d+)\.branches\.(\d+)\.(\d+)\.conv1\.weight")
    found: dict[int, dict[int, dict[int, int]]] = {}
    for key, value in state.items():
        if match := pattern.fullmatch(key):
            module, branch, block = (int(group) for group in match.groups())
            found.setdefault(module, {}).setdefault(branch, {})[block] = int(value.shape[0])
    return tuple(
        tuple(tuple(blocks[b] for b in sorted(blocks)) for _, blocks in sorted(found[m].items()))
        for m in sorted(found)
    )


def _describe(layout: tuple) -> str:
    """'1 module(s) of branches with (4, 4) blocks of (32, 64) channels' for messages."""
    if not layout:
        return "no modules"
    blocks = tuple(len(branch) for branch in layout[0])
    channels = tuple(branch[0] if branch else 0 for branch in layout[0])
    uniform = all(module == layout[0] for module in layout)
    return (f"{len(layout)} module(s) of {len(blocks)} branches with {blocks} blocks of {channels} channels"
            + ("" if uniform else " in its first module, others differ"))


def infer(state: dict[str, np.ndarray], source: str) -> dict:
    """{"backbone": "hrnet", "width": 32, "num_joints": 17}: every stage checked against W32 / W48.

    Raises WeightsError naming the first stage that is neither HRNet-W32's nor W48's.
    """
    from models.hrnet import BLOCKS_PER_BRANCH, LAYER1_BLOCKS, STAGES, WIDTHS, HRNetConfig

    if "final_layer.weight" not in state or "stage2.0.branches.0.0.conv1.weight" not in state:
        raise WeightsError(f"{source} looks like an HRNet but has no stage2.0.branches.0 / final_layer; not a pose "
                           "HRNet (the authors' pose_hrnet or MMPose 'hrnet_w*_coco') checkpoint; nothing written")
    width = int(state["stage2.0.branches.0.0.conv1.weight"].shape[0])
    label = f"HRNet-W{width}" if width in WIDTHS else "HRNet-W32 or W48"
    layer1 = len({key.split(".")[1] for key in state if key.startswith("layer1.")})
    if layer1 != LAYER1_BLOCKS:
        raise WeightsError(f"{source}: stage1 (layer1) has {layer1} Bottleneck blocks, {label} has "
                           f"{LAYER1_BLOCKS}; only HRNet-W32 and W48 convert; nothing written")
    for stage, (modules, branches) in enumerate(STAGES, start=2):
        found = _stage_layout(state, stage)
        for candidate in ([width] if width in WIDTHS else WIDTHS):
            channels = HRNetConfig(width=candidate).branch_channels(branches)
            expected = tuple(tuple((c,) * BLOCKS_PER_BRANCH for c in channels) for _ in range(modules))
            if found == expected:
                break
        else:
            wanted = (f"{modules} module(s) of {branches} branches with {(BLOCKS_PER_BRANCH,) * branches} blocks of "
                      + " or ".join(str(HRNetConfig(width=w).branch_channels(branches)) for w in
                                    ([width] if width in WIDTHS else WIDTHS)) + " channels")
            raise WeightsError(f"{source}: stage{stage} has {_describe(found)}; {label} has {wanted}; "
                               "only HRNet-W32 and W48 convert; nothing written")
    return {"backbone": "hrnet", "width": width, "num_joints": int(state["final_layer.weight"].shape[0])}


def label(info: dict) -> str:
    """'HRNet-W32'."""
    return f"HRNet-W{info['width']}"


def build(info: dict, input_size: tuple[int, int]) -> keras.Model:
    """The Keras network of a sidecar description, fresh weights."""
    from models.hrnet import build_hrnet

    return build_hrnet(int(info["width"]), int(info["num_joints"]), input_size)


def fields(info: dict) -> dict:
    """The sidecar fields that fix the architecture; KeyError / ValueError / TypeError when bad."""
    from models.hrnet import WIDTHS

    width = int(info["width"])
    if width not in WIDTHS:
        raise ValueError(f"HRNet width {width} is not one of {WIDTHS}")
    return {"backbone": "hrnet", "width": width}
