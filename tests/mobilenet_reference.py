"""A plain PyTorch SimpleBaseline-MobileNetV2, the reference the Keras port and the converter are checked against.

Written from MMPose 0.x's definition (mmpose/models/backbones/mobilenet_v2.py at v0.29.0: mmcv
ConvModule = Conv2d(bias=False) + BatchNorm2d + ReLU6, InvertedResidual, arch_settings, widen_factor,
out_indices=(7,), the last 1x1 conv to 1280) and its TopdownHeatmapSimpleHead (in_channels=1280),
in torch.nn only, with the module names MMPose's checkpoints have: `state_dict()` keys are
`conv1.conv.weight`, `layer2.0.conv.1.bn.running_var`, `conv2.conv.weight`, `deconv_layers.0.weight`,
`final_layer.bias`; torch_reference.save_mmpose adds `backbone.` / `keypoint_head.`.
Used only by tests.
"""

import torch
from torch import nn

from torch_reference import randomize_

ARCH_SETTINGS = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                 [6, 320, 1, 1]]


def make_divisible(value, divisor=8, min_ratio=0.9):
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new_value + divisor if new_value < min_ratio * value else new_value


class ConvModule(nn.Module):
    """mmcv.cnn.ConvModule with norm_cfg=BN and act_cfg=ReLU6 (or None): the names mmcv gives."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                              groups=groups, bias=False)  # mmcv's bias='auto': no bias before a norm
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU6(inplace=True) if act else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.activate(x) if self.activate is not None else x


class InvertedResidual(nn.Module):
    def __init__(self, in_channels, out_channels, stride, expand_ratio):
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        hidden = make_divisible(round(in_channels * expand_ratio), 8)
        layers = []
        if expand_ratio != 1:
            layers.append(ConvModule(in_channels, hidden, 1))
        layers += [ConvModule(hidden, hidden, 3, stride=stride, groups=hidden),
                   ConvModule(hidden, out_channels, 1, act=False)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class PoseMobileNetV2(nn.Module):
    """(N, 3, H, W) normalised RGB -> (N, K, H/4, W/4) heatmaps (NCHW)."""

    def __init__(self, num_joints=17, widen_factor=1.0):
        super().__init__()
        in_channels = make_divisible(32 * widen_factor, 8)
        self.conv1 = ConvModule(3, in_channels, 3, stride=2)
        self.stages = []
        for i, (expand_ratio, channels, blocks, stride) in enumerate(ARCH_SETTINGS, start=1):
            out_channels = make_divisible(channels * widen_factor, 8)
            layers = []
            for block in range(blocks):
                layers.append(InvertedResidual(in_channels, out_channels, stride if block == 0 else 1, expand_ratio))
                in_channels = out_channels
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            self.stages.append(f"layer{i}")
        last = int(1280 * widen_factor) if widen_factor > 1.0 else 1280
        self.conv2 = ConvModule(in_channels, last, 1)
        head = []
        in_channels = last
        for _ in range(3):
            head += [nn.ConvTranspose2d(in_channels, 256, 4, stride=2, padding=1, output_padding=0, bias=False),
                     nn.BatchNorm2d(256), nn.ReLU(inplace=True)]
            in_channels = 256
        self.deconv_layers = nn.Sequential(*head)
        self.final_layer = nn.Conv2d(256, num_joints, 1)

    def forward(self, x):
        x = self.conv1(x)
        for name in self.stages:
            x = getattr(self, name)(x)
        return self.final_layer(self.deconv_layers(self.conv2(x)))


def randomized_pose_mobilenet_v2(num_joints=17, widen_factor=1.0, seed=0, input_size=(256, 192)):
    """A PoseMobileNetV2 in eval mode with random weights and random BatchNorm statistics.

    As torch_reference.randomized_pose_resnet: BN gamma/beta/mean/var all random (a converter that
    swaps them fails), each conv rescaled to unit output variance on a random image so the heatmaps
    vary in space. Output variance 1 keeps most ReLU6 inputs below 6, yet some clip (exercised).
    """
    torch.manual_seed(seed)  # the default conv initialisers draw from the global generator
    return randomize_(PoseMobileNetV2(num_joints, widen_factor).eval(), seed, input_size)
