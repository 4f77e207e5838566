"""A plain PyTorch PoseResNet, the reference the Keras port and the converter are checked against.

Written from the SimpleBaseline paper's structure (torchvision ResNet v1.5 bottlenecks + three
ConvTranspose2d(256, 4, stride 2, padding 1) + BatchNorm + ReLU + a 1x1 conv), with the module names of
microsoft/human-pose-estimation.pytorch, so `state_dict()` has that repository's keys
(`conv1.weight`, `layer1.0.conv1.weight`, `deconv_layers.0.weight`, `final_layer.weight`, ...).
Used only by tests: the product never imports torch for the pose model.
"""

from pathlib import Path

import torch
from torch import nn

BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


class PoseResNet(nn.Module):
    """(N, 3, H, W) normalised RGB -> (N, K, H/4, W/4) heatmaps (NCHW, torch's layout)."""

    def __init__(self, depth: int = 50, num_joints: int = 17):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for stage, (blocks, width, stride) in enumerate(
            zip(BLOCKS_PER_STAGE[depth], (64, 128, 256, 512), (1, 2, 2, 2)), start=1
        ):
            layers = []
            for block in range(blocks):
                layers.append(Bottleneck(in_channels, width, stride if block == 0 else 1))
                in_channels = width * Bottleneck.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        head = []
        for _ in range(3):
            head += [
                nn.ConvTranspose2d(in_channels, 256, 4, stride=2, padding=1, output_padding=0, bias=False),
                nn.BatchNorm2d(256),
                nn.ReLU(inplace=True),
            ]
            in_channels = 256
        self.deconv_layers = nn.Sequential(*head)
        self.final_layer = nn.Conv2d(256, num_joints, 1, stride=1, padding=0)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_layer(self.deconv_layers(x))


def randomized_pose_resnet(depth: int = 50, num_joints: int = 17, seed: int = 0) -> PoseResNet:
    """A PoseResNet in eval mode with random weights and non-trivial BatchNorm statistics.

    Random running means (in [-0.3, 0.3]), variances (in [0.5, 2]), gammas and betas make a converter
    that mixes up gamma/beta/mean/var, or drops one, fail the parity test. Each conv is first rescaled
    to unit output variance on a random image (LSUV, Mishkin & Matas 2016): with torch's default init
    the activations fade through 50+ layers and the heatmaps come out nearly flat, so a misplaced
    deconvolution would change them by less than the parity tolerance.
    """
    torch.manual_seed(seed)  # the default conv initialisers draw from the global generator
    return randomize_(PoseResNet(depth, num_joints).eval(), seed, (256, 192))


def randomize_(model: nn.Module, seed: int, input_size: tuple[int, int]) -> nn.Module:
    """Random BatchNorm statistics and conv biases, then each conv scaled to unit output variance
    on one random (1, 3, H, W) image; in place, returns the model."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.empty(n).uniform_(0.5, 1.5, generator=generator))
                module.bias.copy_(torch.empty(n).uniform_(-0.3, 0.3, generator=generator))
                module.running_mean.copy_(torch.empty(n).uniform_(-0.3, 0.3, generator=generator))
                module.running_var.copy_(torch.empty(n).uniform_(0.5, 2.0, generator=generator))
                module.num_batches_tracked.fill_(1000)
            elif isinstance(module, nn.Conv2d) and module.bias is not None:
                module.bias.copy_(torch.empty_like(module.bias).uniform_(-0.5, 0.5, generator=generator))

        def unit_variance(module, inputs, output):
            scale = output.std()
            module.weight.div_(scale)
            return output / scale

        convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        hooks = [conv.register_forward_hook(unit_variance) for conv in convs]
        model(torch.randn(1, 3, *input_size, generator=generator))
        for hook in hooks:
            hook.remove()
    return model


def save_microsoft(model: PoseResNet, path: Path, module_prefix: bool = False) -> Path:
    """A bare state_dict, as microsoft/human-pose-estimation.pytorch ships its models.

    module_prefix adds the `module.` that nn.DataParallel puts on every key.
    """
    state = model.state_dict()
    if module_prefix:
        state = {f"module.{key}": value for key, value in state.items()}
    torch.save(state, path)
    return path


def mmengine_meta() -> dict:
    """What MMPose 1.x (MMEngine's runner) keeps in a checkpoint's 'meta' beside the weights: the
    config as text and the dataset's metainfo, numpy arrays among it (COCO-17's sigmas, colours)."""
    import numpy as np

    return {
        "mmengine_version": "0.7.4", "epoch": 210, "iter": 480690, "seed": 0,
        "cfg": "default_scope = 'mmpose'\nmodel = dict(type='TopdownPoseEstimator', ...)\n",
        "dataset_meta": {
            "dataset_name": "coco", "num_keypoints": 17,
            "flip_indices": [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15],
            "skeleton_links": [(15, 13), (13, 11), (16, 14)],
            "keypoint_colors": np.array([[51, 153, 255]] * 17, np.uint8),
            "sigmas": np.array([0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062,
                                0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089], np.float32),
        },
    }


def mmpose_checkpoint(state: dict, head_keys: tuple[str, ...], version: str) -> dict:
    """A torch state_dict in MMPose's TopDown layout: the keys starting with head_keys under the
    head ('keypoint_head.' in 0.x, 'head.' in 1.x), the rest under 'backbone.'; with each version's meta."""
    head = {"0.x": "keypoint_head.", "1.x": "head."}[version]
    meta = {"epoch": 210, "mmcv_version": "1.1.1"} if version == "0.x" else mmengine_meta()
    return {"meta": meta, "state_dict": {(head if key.startswith(head_keys) else "backbone.") + key: value
                                         for key, value in state.items()}}


def save_mmpose(model: PoseResNet, path: Path, version: str = "0.x") -> Path:
    """The MMPose TopDown layout: {'meta': ..., 'state_dict': {backbone.*, keypoint_head.*}} (0.x),
    {backbone.*, head.*} (1.x)."""
    torch.save(mmpose_checkpoint(model.state_dict(), ("deconv_layers.", "final_layer."), version), path)
    return path
