"""Trained pose weights: convert PyTorch checkpoints to Keras, download the MMPose ones, load.

    python -m app.weights download [NAME]        # an MMPose model-zoo checkpoint, verified, converted
    python -m app.weights download NAME --accept-unverified  # one whose sha256 does not match its name
    python -m app.weights convert SRC.pth [DST]  # a checkpoint you already have

A converted model is two files in weights/: `<name>.weights.h5` (Keras weights) and `<name>.json`
(source, its sha256, backbone and depth, widen_factor or width, num_joints, input_size, udp), which
`load_pose_model` builds the network from; "udp": true for a checkpoint trained with UDP's unbiased
geometry (its file name says `udp`, or `convert --udp`), which app.pose then crops and decodes with.

Three networks convert, told apart by their keys (infer_network): SimpleBaseline-ResNet
(models/simple_baseline.py), SimpleBaseline-MobileNetV2 (models/mobilenet_v2.py, MMPose's
`mobilenetv2_coco_*`: `backbone.conv1.conv.weight`, `backbone.layer1.0.conv.0.conv.weight`, ...) and
HRNet-W32/W48 (models/hrnet.py: `transition1.*`, `stage2.*`, ...).
Checkpoints come in two layouts, both mapped key by key onto the Keras layers:
- Microsoft (microsoft/human-pose-estimation.pytorch) and the HRNet authors'
  (leoxiaobin/deep-high-resolution-net.pytorch): a bare state_dict, `conv1.weight`,
  `layer1.0.conv1.weight`, `deconv_layers.0.weight`, `final_layer.weight`; `module.` in front when it
  was saved from nn.DataParallel.
- MMPose 0.x: {'state_dict': {'backbone.<as above>', 'keypoint_head.deconv_layers.*',
  'keypoint_head.final_layer.*'}, 'meta': ...}; MMPose 1.x the same with 'head.' for
  'keypoint_head.' (its `td-hm_*` files).

The package, by concern (a network's key mapping is one small module: the next network adds one):
- zoo.py: the model-zoo table, download and checksum verification.
- checkpoint.py: reading a .pth without running its code; one line for a damaged file.
- networks.py: which network a state holds, its label, building it; one module per network:
  resnet.py (SimpleBaseline-ResNet), mobilenet_v2.py (SimpleBaseline-MobileNetV2), hrnet.py (HRNet).
- mapping.py: copying a state's tensors onto the Keras layers, every shape checked.
- conversion.py: checkpoint -> <name>.weights.h5 and its JSON sidecar.
- sidecar.py: the JSON beside a .weights.h5; files.py: names, checksums, atomic writes.
- loading.py: finding and loading a converted model.
- cli.py, __main__.py: `python -m app.weights download|convert`.
"""

from pathlib import Path

from app.errors import DownloadError, MissingWeightsError, WeightsError
from app.weights.files import CONVERT_HINT, DOWNLOAD_HINT, KERAS_SUFFIX, WEIGHTS_DIR, sha256_of
from app.weights.checkpoint import _load_pickle, normalize_state_dict, read_checkpoint
from app.weights.resnet import infer_architecture
from app.weights.mobilenet_v2 import MOBILENETV2_WIDEN_FACTORS
from app.weights.networks import build_network, infer_network, network_label
from app.weights.mapping import assign_state
from app.weights.sidecar import read_sidecar, sidecar_path
from app.weights.conversion import (
    DEFAULT_INPUT_SIZE,
    checkpoint_stem,
    convert,
    input_size_from_name,
    input_size_problem,
    udp_from_name,
)
from app.weights.zoo import (
    ACCEPT_FLAG,
    DEFAULT_CHECKPOINT,
    MODEL_ZOO,
    UNVERIFIED_SUFFIX,
    ZooCheckpoint,
    download,
    download_url,
    expected_sha256_prefix,
    fetch,
)
from app.weights.loading import MODEL_SHORTHANDS, default_weights_path, load_pose_model, resolve_weights
from app.weights.cli import main

__all__ = [
    "ACCEPT_FLAG", "CONVERT_HINT", "DownloadError", "MissingWeightsError", "WeightsError", "DEFAULT_CHECKPOINT", "DEFAULT_INPUT_SIZE", "DOWNLOAD_HINT", "KERAS_SUFFIX",
    "MOBILENETV2_WIDEN_FACTORS", "MODEL_SHORTHANDS", "MODEL_ZOO", "UNVERIFIED_SUFFIX", "WEIGHTS_DIR", "Path",
    "ZooCheckpoint", "assign_state", "build_network", "checkpoint_stem", "convert", "default_weights_path",
    "download", "download_url", "expected_sha256_prefix", "fetch", "infer_architecture", "infer_network",
    "input_size_from_name", "input_size_problem", "load_pose_model", "main", "network_label",
    "normalize_state_dict", "read_checkpoint", "read_sidecar", "resolve_weights", "sha256_of", "sidecar_path",
    "udp_from_name", "_load_pickle",
]
