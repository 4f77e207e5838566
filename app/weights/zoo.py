"""The model zoo (MMPose 0.x checkpoints with their COCO AP) and downloading one, checksum verified."""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from tqdm import tqdm

from app.atomic import temp_path
from app.errors import DownloadError
from app.weights.conversion import checkpoint_stem, convert
from app.weights.files import CONVERT_HINT, KERAS_SUFFIX, WEIGHTS_DIR, sha256_of


@dataclass(frozen=True)
class ZooCheckpoint:
    """One checkpoint of the MMPose 0.x model zoo (trained on COCO train2017)."""

    url: str
    input_size: tuple[int, int]  # (H, W)
    coco_ap: float  # COCO val2017 AP, person boxes from a detector with 56.4 person AP


# From open-mmlab/mmpose @ 186742d3df5a7f82af2a02f968110b07467a00da,
# configs/legacy/body/2d_kpt_sview_rgb_img/topdown_heatmap/coco/resnet_coco.md.
# The 8 hex characters after the last '-' of each file name start the file's sha256.
MODEL_ZOO = {
    "res50_coco_256x192": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res50_coco_256x192-ec54d7f3_20200709.pth",
        (256, 192), 0.718),
    "res50_coco_384x288": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res50_coco_384x288-e6f795e9_20200709.pth",
        (384, 288), 0.731),
    "res101_coco_256x192": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res101_coco_256x192-6e6babf0_20200708.pth",
        (256, 192), 0.726),
    "res101_coco_384x288": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res101_coco_384x288-8c71bdc9_20200709.pth",
        (384, 288), 0.748),
    "res152_coco_256x192": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res152_coco_256x192-f6e307c2_20200709.pth",
        (256, 192), 0.735),
    "res152_coco_384x288": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res152_coco_384x288-3860d4c9_20200709.pth",
        (384, 288), 0.750),
    # The fast ones for CPUs: the same head on MobileNetV2 (models/mobilenet_v2.py). From MMPose 0.x,
    # configs/body/2d_kpt_sview_rgb_img/topdown_heatmap/coco/mobilenetv2_coco.md (the same rows in
    # configs/legacy/... @ fd46280f558b1db24967afa030a92ca7a750a418). The architecture of a file comes
    # from its keys (infer_network), never from these names.
    "mobilenetv2_coco_256x192": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/mobilenetv2/mobilenetv2_coco_256x192-d1e58e7b_20200727.pth",
        (256, 192), 0.646),
    "mobilenetv2_coco_384x288": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/mobilenetv2/mobilenetv2_coco_384x288-26be4816_20200727.pth",
        (384, 288), 0.673),
    # The same ResNet SimpleBaselines trained on DARK's unbiased targets: the checkpoints MMPose's DARK
    # APs (72.4 for R50 256x192) were measured with, decoded with `--decode dark`. From MMPose 0.x,
    # configs/top_down/darkpose/coco (the DARK results table).
    "res50_coco_256x192_dark": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res50_coco_256x192_dark-43379d20_20200709.pth",
        (256, 192), 0.724),
    "res50_coco_384x288_dark": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res50_coco_384x288_dark-33d3e5e5_20210203.pth",
        (384, 288), 0.735),
    "res101_coco_256x192_dark": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res101_coco_256x192_dark-64d433e6_20200812.pth",
        (256, 192), 0.732),
    "res101_coco_384x288_dark": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res101_coco_384x288_dark-cb45c88d_20210203.pth",
        (384, 288), 0.749),
    "res152_coco_256x192_dark": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res152_coco_256x192_dark-ab4840d5_20200812.pth",
        (256, 192), 0.745),
    "res152_coco_384x288_dark": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res152_coco_384x288_dark-d3b8ebd7_20210203.pth",
        (384, 288), 0.757),
    # HRNet (models/hrnet.py), SimpleBaseline's successor: the same head-less heatmaps from a
    # high-resolution backbone. From MMPose 0.x @ v0.29.0 (0d9a00c1d64b68999e4b2a4ee5ed0d5ac2c3e296),
    # configs/body/2d_kpt_sview_rgb_img/topdown_heatmap/coco/hrnet_coco.md and hrnet_dark_coco.md.
    # The HRNet authors' own files (pose_hrnet_w32_256x192.pth ...) are on Google Drive / OneDrive
    # with no published checksum: convert them with `python -m app.weights convert`.
    "hrnet_w32_coco_256x192": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/hrnet/hrnet_w32_coco_256x192-c78dce93_20200708.pth",
        (256, 192), 0.746),
    "hrnet_w32_coco_384x288": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/hrnet/hrnet_w32_coco_384x288-d9f0d786_20200708.pth",
        (384, 288), 0.760),
    "hrnet_w48_coco_256x192": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/hrnet/hrnet_w48_coco_256x192-b9e0b3ab_20200708.pth",
        (256, 192), 0.756),
    "hrnet_w48_coco_384x288": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/hrnet/hrnet_w48_coco_384x288-314c8528_20200708.pth",
        (384, 288), 0.767),
    "hrnet_w32_coco_256x192_dark": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/hrnet/hrnet_w32_coco_256x192_dark-07f147eb_20200812.pth",
        (256, 192), 0.757),
    "hrnet_w32_coco_384x288_dark": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/hrnet/hrnet_w32_coco_384x288_dark-307dafc2_20210203.pth",
        (384, 288), 0.766),
    "hrnet_w48_coco_256x192_dark": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/hrnet/hrnet_w48_coco_256x192_dark-8cba3197_20200812.pth",
        (256, 192), 0.764),
    "hrnet_w48_coco_384x288_dark": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/hrnet/hrnet_w48_coco_384x288_dark-e881a4b6_20210203.pth",
        (384, 288), 0.772),
    # HRNet trained with UDP's unbiased data processing (Huang et al., CVPR 2020): the best of
    # MMPose's heatmap models for COCO. The "_udp" in each name makes the conversion record it, so the
    # crops and the decoding follow (app.pose PoseConfig.udp). From MMPose 0.x @ v0.29.0,
    # configs/body/2d_kpt_sview_rgb_img/topdown_heatmap/coco/hrnet_udp_coco.md (the 1.x model zoo
    # links the same files).
    "hrnet_w32_coco_256x192_udp": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/udp/hrnet_w32_coco_256x192_udp-aba0be42_20210220.pth",
        (256, 192), 0.760),
    "hrnet_w32_coco_384x288_udp": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/udp/hrnet_w32_coco_384x288_udp-e97c1a0f_20210223.pth",
        (384, 288), 0.769),
    "hrnet_w48_coco_256x192_udp": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/udp/hrnet_w48_coco_256x192_udp-2554c524_20210223.pth",
        (256, 192), 0.767),
    "hrnet_w48_coco_384x288_udp": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/udp/hrnet_w48_coco_384x288_udp-0f89c63e_20210223.pth",
        (384, 288), 0.772),
}
DEFAULT_CHECKPOINT = "res50_coco_256x192"


def expected_sha256_prefix(url: str) -> str:
    """The 8 hex characters after the last '-' of the file name, as MMPose names its checkpoints."""
    name = Path(urllib.parse.urlparse(url).path).name
    match = re.search(r"-([0-9a-f]{8})[^-]*$", name)
    if not match:
        raise DownloadError(f"{name} carries no sha256 prefix to check it against; download it by hand and run: {CONVERT_HINT}")
    return match.group(1)


UNVERIFIED_SUFFIX = ".unverified"
ACCEPT_FLAG = "--accept-unverified"


def fetch(url: str, folder: Path = WEIGHTS_DIR, timeout: float = 15.0, accept_unverified: bool = False) -> Path:
    """Download `url` into folder/<file name>, checked against the sha256 prefix in its name.

    Downloads into a hidden temp file and renames it only once complete, so a failed or cut download
    leaves nothing behind. An existing verified file is reused.

    The prefix rule (MMPose names files `<name>-<first 8 hex of sha256>_<date>.pth`) is confirmed
    by an outside source for res50_coco_256x192 only. A complete download whose sha256 does not
    start with it is kept as `<file name>.unverified` (not converted, not used) and reported in one
    line that says how to accept it; a later call finds that file and does not download again.
    accept_unverified: use such a file (the one already kept, else the fresh download) all the same.
    """
    folder = Path(folder)
    name = Path(urllib.parse.urlparse(url).path).name
    target = folder / name
    unverified = folder / (name + UNVERIFIED_SUFFIX)
    prefix = expected_sha256_prefix(url)
    if target.is_file() and (accept_unverified or sha256_of(target).startswith(prefix)):
        return target
    if unverified.is_file():
        # Downloaded before, complete, with another checksum: downloading it again would fetch the
        # same bytes (one try is all a user asked for, never a loop).
        if accept_unverified:
            os.replace(unverified, target)
            return target
        raise DownloadError(_unverified_message(unverified, sha256_of(unverified), prefix, downloaded=False))
    manual = f"download {url} by hand and run: python -m app.weights convert {name}"

    folder.mkdir(parents=True, exist_ok=True)
    temp = temp_path(target)
    digest = hashlib.sha256()
    received = 0
    try:
        with open(temp, "xb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except urllib.error.HTTPError as error:
                raise DownloadError(f"{url} answered HTTP {error.code} {error.reason}; {manual}") from None
            except (urllib.error.URLError, OSError) as error:  # refused, no DNS, timed out
                reason = getattr(error, "reason", error)
                raise DownloadError(f"cannot reach {urllib.parse.urlparse(url).netloc} ({reason}); offline? {manual}") from None
            expected = int(response.headers.get("Content-Length") or 0)  # 0: the server did not say
            with response, tqdm(
                total=expected or None, unit="B", unit_scale=True, unit_divisor=1024, desc=name, leave=False
            ) as progress:
                try:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        progress.update(len(chunk))
                except (HTTPException, OSError) as error:
                    raise DownloadError(f"download of {name} broke off after {received} bytes ({error}); {manual}") from None
                if expected and received != expected:
                    raise DownloadError(f"download of {name} stopped at {received} of {expected} bytes; try again or {manual}")
        if digest.hexdigest().startswith(prefix) or accept_unverified:
            os.replace(temp, target)
            return target
        os.replace(temp, unverified)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    raise DownloadError(_unverified_message(unverified, digest.hexdigest(), prefix, downloaded=True))


def _unverified_message(path: Path, sha256: str, prefix: str, downloaded: bool) -> str:
    """One line: what did not match, where the file is, how to accept it or start over."""
    when = "downloaded" if downloaded else "already downloaded"
    return (
        f"{path.name.removesuffix(UNVERIFIED_SUFFIX)} ({when}) has sha256 {sha256[:8]}..., but its name says "
        f"{prefix}...; kept as {path}, not converted. If you trust the server, rerun the same download "
        f"command with {ACCEPT_FLAG} to convert it; to download it again instead, delete that file"
    )


def download(
    name: str = DEFAULT_CHECKPOINT,
    folder: Path = WEIGHTS_DIR,
    base_url: str | None = None,
    timeout: float = 15.0,
    accept_unverified: bool = False,
) -> Path:
    """Download the MMPose checkpoint `name` (see MODEL_ZOO), verify it, convert it; returns the .weights.h5.

    base_url replaces the server and folder of the zoo URL (a mirror, or a test server); the file
    name, and so its checksum, stays the zoo's. accept_unverified: see fetch().
    """
    if name not in MODEL_ZOO:
        raise DownloadError(f"unknown checkpoint {name!r}; choose one of: {', '.join(MODEL_ZOO)}")
    entry = MODEL_ZOO[name]
    url = entry.url
    if base_url:
        url = base_url.rstrip("/") + "/" + Path(urllib.parse.urlparse(entry.url).path).name
    return download_url(url, folder, input_size=entry.input_size, timeout=timeout, accept_unverified=accept_unverified)


def download_url(
    url: str,
    folder: Path = WEIGHTS_DIR,
    input_size: tuple[int, int] | None = None,
    timeout: float = 15.0,
    accept_unverified: bool = False,
) -> Path:
    """fetch() a checkpoint whose name carries its sha256 prefix, then convert() it beside itself."""
    checkpoint = fetch(url, folder, timeout=timeout, accept_unverified=accept_unverified)
    dst = Path(folder) / (checkpoint_stem(checkpoint) + KERAS_SUFFIX)
    return convert(checkpoint, dst, input_size=input_size, source=url)

