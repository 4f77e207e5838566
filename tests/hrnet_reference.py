"""A plain PyTorch HRNet (pose), the reference the Keras port and the converter are checked against.

Written from the HRNet authors' definition (leoxiaobin/deep-high-resolution-net.pytorch,
lib/models/pose_hrnet.py: PoseHighResolutionNet, HighResolutionModule, BasicBlock, Bottleneck, and
experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml / w48_*: stage 2..4 with 1, 4, 3 modules of
2, 3, 4 branches, 4 BasicBlocks per branch, widths W, 2W, 4W, 8W; FINAL_CONV_KERNEL 1), in torch.nn
only, with that repository's module names: `state_dict()` keys are `conv1.weight`, `bn1.running_mean`,
`layer1.0.downsample.0.weight`, `transition1.1.0.0.weight`, `stage2.0.branches.1.3.conv2.weight`,
`stage3.2.fuse_layers.2.0.1.1.running_var`, `final_layer.bias`. save_mmpose writes MMPose 0.x's
layout of the same tensors (`backbone.*`, `keypoint_head.final_layer.*`). Used only by tests.
"""

from pathlib import Path

import torch
from torch import nn

from torch_reference import Bottleneck, mmpose_checkpoint, randomize_

STAGES = ((1, 2), (4, 3), (3, 4))  # (modules, branches) of stage 2, 3, 4


class BasicBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int, relu: bool) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
              nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    def __init__(self, channels: list[int], multi_scale_output: bool):
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*(BasicBlock(c) for _ in range(4))) for c in channels)
        fuse_layers = []
        for i in range(len(channels) if multi_scale_output else 1):
            row = []
            for j in range(len(channels)):
                if j > i:
                    row.append(nn.Sequential(
                        *conv_bn(channels[j], channels[i], 1, 1, relu=False),
                        nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")))
                elif j == i:
                    row.append(None)
                else:
                    steps = [conv_bn(channels[j], channels[j], 3, 2, relu=True) for _ in range(i - j - 1)]
                    steps.append(conv_bn(channels[j], channels[i], 3, 2, relu=False))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse_layers)
        self.relu = nn.ReLU()

    def forward(self, xs: list) -> list:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, len(xs)):
                y = y + (xs[j] if i == j else row[j](xs[j]))
            out.append(self.relu(y))
        return out


class PoseHighResolutionNet(nn.Module):
    """(N, 3, H, W) normalised RGB -> (N, K, H/4, W/4) heatmaps (NCHW)."""

    def __init__(self, width: int = 32, num_joints: int = 17):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(*(Bottleneck(64 if i == 0 else 256, 64, 1) for i in range(4)))
        previous = [256]
        for stage, (modules, branches) in enumerate(STAGES, start=2):
            channels = [width * 2**b for b in range(branches)]
            transition = []
            for i, c in enumerate(channels):
                if i < len(previous):
                    transition.append(None if previous[i] == c else conv_bn(previous[i], c, 3, 1, relu=True))
                else:  # one new branch per stage
                    transition.append(nn.Sequential(conv_bn(previous[-1], c, 3, 2, relu=True)))
            setattr(self, f"transition{stage - 1}", nn.ModuleList(transition))
            setattr(self, f"stage{stage}", nn.Sequential(*(
                HighResolutionModule(channels, multi_scale_output=not (stage == 4 and m == modules - 1))
                for m in range(modules))))
            previous = channels
        self.final_layer = nn.Conv2d(width, num_joints, 1)

    def forward(self, x):
        x = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        ys = [self.layer1(x)]
        for stage in (2, 3, 4):
            transition = getattr(self, f"transition{stage - 1}")
            xs = [ys[i] if t is None else t(ys[i] if i < len(ys) else ys[-1]) for i, t in enumerate(transition)]
            for module in getattr(self, f"stage{stage}"):
                xs = module(xs)
            ys = xs
        return self.final_layer(ys[0])


def randomized_hrnet(width: int = 32, num_joints: int = 17, seed: int = 0, input_size=(256, 192)):
    """A PoseHighResolutionNet in eval mode with random weights and random BatchNorm statistics
    (torch_reference.randomize_: every conv rescaled to unit output variance on a random image)."""
    torch.manual_seed(seed)
    return randomize_(PoseHighResolutionNet(width, num_joints).eval(), seed, input_size)


def save_mmpose(model: PoseHighResolutionNet, path: Path, version: str = "0.x") -> Path:
    """MMPose TopDown: {'meta', 'state_dict': {backbone.<same keys>, keypoint_head.final_layer.*}}
    (0.x; 1.x: head.final_layer.*)."""
    torch.save(mmpose_checkpoint(model.state_dict(), ("final_layer.",), version), path)
    return path
