"""The official heatmap decoders, transcribed joint by joint (NCHW, as they are written), for tests.

Written from the sources, independently of app.decode (nothing here imports it):
- get_max_preds: microsoft/human-pose-estimation.pytorch lib/core/inference.py `get_max_preds`, and
  MMPose v0.6.0 mmpose/core/evaluation/top_down_eval.py `_get_max_preds` (non-positive peak -> 0, 0).
- quarter: Microsoft `get_final_preds` (TEST.POST_PROCESS) and MMPose v0.29.0 `keypoints_from_heatmaps`,
  post_process='default'.
- dark: MMPose v0.29.0 `keypoints_from_heatmaps`, post_process='unbiased', kernel = test_cfg
  modulate_kernel (11 in the 256x192 configs, 17 in the 384x288 ones): `_gaussian_blur`,
  np.log(np.maximum(., 1e-10)), `_taylor`; then the product's one change, the clip to the map.
- dark_udp: MMPose 1.x mmpose/codecs/utils/refinement.py `refine_keypoints_dark_udp` (UDPHeatmap.decode),
  kernel as dark: its `gaussian_blur` (post_processing.py, the same steps as 0.x's `_gaussian_blur`),
  clip, log, edge padding, the one-pixel stencil, as written (per person, vectorised over joints); then
  the product's two changes: a non-positive peak is not stepped (MMPose steps from -1), and the clip to
  the map.
- flip: MMPose v0.29.0 `flip_back` (post_transforms.py), shift_heatmap in
  TopdownHeatmapSimpleHead.inference_model (False in the UDP configs), (a + b) / 2 in TopDown.forward_test.
"""

import cv2
import numpy as np

COCO_FLIP_PAIRS = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]]  # MMPose's coco.py


def official_max_preds(heatmaps):
    n, k, _, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    idx = np.argmax(flat, 2).reshape(n, k, 1)
    maxvals = np.amax(flat, 2).reshape(n, k, 1)
    preds = np.tile(idx, (1, 1, 2)).astype(np.float32)
    preds[:, :, 0] = preds[:, :, 0] % w
    preds[:, :, 1] = np.floor(preds[:, :, 1] / w)
    preds *= np.tile(np.greater(maxvals, 0.0), (1, 1, 2)).astype(np.float32)
    return preds, maxvals


def official_quarter(heatmaps):
    preds, maxvals = official_max_preds(heatmaps)
    n, k, h, w = heatmaps.shape
    for i in range(n):
        for j in range(k):
            heatmap = heatmaps[i][j]
            px, py = int(preds[i][j][0]), int(preds[i][j][1])
            if 1 < px < w - 1 and 1 < py < h - 1:
                diff = np.array([heatmap[py][px + 1] - heatmap[py][px - 1],
                                 heatmap[py + 1][px] - heatmap[py - 1][px]])
                preds[i][j] += np.sign(diff) * .25
    return preds, maxvals


def official_gaussian_blur(heatmaps, kernel=11):
    border = (kernel - 1) // 2
    n, k, h, w = heatmaps.shape
    for i in range(n):
        for j in range(k):
            origin_max = np.max(heatmaps[i, j])
            padded = np.zeros((h + 2 * border, w + 2 * border), dtype=np.float32)
            padded[border:-border, border:-border] = heatmaps[i, j].copy()
            padded = cv2.GaussianBlur(padded, (kernel, kernel), 0)
            heatmaps[i, j] = padded[border:-border, border:-border].copy()
            heatmaps[i, j] *= origin_max / np.max(heatmaps[i, j])
    return heatmaps


def official_taylor(heatmap, coord):
    h, w = heatmap.shape[:2]
    px, py = int(coord[0]), int(coord[1])
    if 1 < px < w - 2 and 1 < py < h - 2:
        dx = 0.5 * (heatmap[py][px + 1] - heatmap[py][px - 1])
        dy = 0.5 * (heatmap[py + 1][px] - heatmap[py - 1][px])
        dxx = 0.25 * (heatmap[py][px + 2] - 2 * heatmap[py][px] + heatmap[py][px - 2])
        dxy = 0.25 * (heatmap[py + 1][px + 1] - heatmap[py - 1][px + 1]
                      - heatmap[py + 1][px - 1] + heatmap[py - 1][px - 1])
        dyy = 0.25 * (heatmap[py + 2][px] - 2 * heatmap[py][px] + heatmap[py - 2][px])
        derivative = np.array([[dx], [dy]])
        hessian = np.array([[dxx, dxy], [dxy, dyy]])
        if dxx * dyy - dxy ** 2 != 0:
            offset = -np.linalg.inv(hessian) @ derivative
            coord += np.squeeze(np.array(offset.T), axis=0)
    return coord


def official_dark(heatmaps, clip=True, kernel=11):
    heatmaps = heatmaps.copy()
    preds, maxvals = official_max_preds(heatmaps)
    n, k, h, w = heatmaps.shape
    with np.errstate(divide="ignore", invalid="ignore"):  # all-zero maps: 0 / 0 in the rescale
        logs = np.log(np.maximum(official_gaussian_blur(heatmaps, kernel), 1e-10))
    for i in range(n):
        for j in range(k):
            preds[i][j] = official_taylor(logs[i][j], preds[i][j])
    if clip:  # the product's change: a step never takes the keypoint off the map
        preds[..., 0] = np.clip(preds[..., 0], 0, w - 1)
        preds[..., 1] = np.clip(preds[..., 1], 0, h - 1)
    return preds, maxvals


def official_dark_udp(heatmaps, clip=True, kernel=11):
    heatmaps = heatmaps.copy()
    preds, maxvals = official_max_preds(heatmaps)
    start = preds.copy()
    n, k, h, w = heatmaps.shape
    with np.errstate(divide="ignore", invalid="ignore"):  # all-zero maps: 0 / 0 in the rescale
        heatmaps = official_gaussian_blur(heatmaps, kernel)  # 1.x `gaussian_blur` is the same function
    np.clip(heatmaps, 0.001, 50, heatmaps)
    np.log(heatmaps, heatmaps)
    pad = np.pad(heatmaps, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge").flatten()
    index = preds[..., 0] + 1 + (preds[..., 1] + 1) * (w + 2)
    index += (w + 2) * (h + 2) * np.arange(0, n * k).reshape(-1, k)
    index = index.astype(int).reshape(-1, 1)
    i_ = pad[index]
    ix1 = pad[index + 1]
    iy1 = pad[index + w + 2]
    ix1y1 = pad[index + w + 3]
    ix1_y1_ = pad[index - w - 3]
    ix1_ = pad[index - 1]
    iy1_ = pad[index - 2 - w]
    dx = 0.5 * (ix1 - ix1_)
    dy = 0.5 * (iy1 - iy1_)
    derivative = np.concatenate([dx, dy], axis=1).reshape(n, k, 2, 1)
    dxx = ix1 - 2 * i_ + ix1_
    dyy = iy1 - 2 * i_ + iy1_
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
    hessian = np.concatenate([dxx, dxy, dxy, dyy], axis=1).reshape(n, k, 2, 2)
    hessian = np.linalg.inv(hessian + np.finfo(np.float32).eps * np.eye(2))
    preds -= np.einsum("ijmn,ijnk->ijmk", hessian, derivative).reshape(n, k, 2)
    not_positive = maxvals[..., 0] <= 0  # the product's change: no step from a peak that is not one
    preds[not_positive] = start[not_positive]
    if clip:
        preds[..., 0] = np.clip(preds[..., 0], 0, w - 1)
        preds[..., 1] = np.clip(preds[..., 1], 0, h - 1)
    return preds, maxvals


def official_flip_average(heatmaps, heatmaps_of_mirrored, shift=True):
    """NCHW: the flip test's averaged heatmaps; shift: test_cfg shift_heatmap (False for UDP)."""
    flipped_back = heatmaps_of_mirrored.copy()
    for left, right in COCO_FLIP_PAIRS:
        flipped_back[:, left, ...] = heatmaps_of_mirrored[:, right, ...]
        flipped_back[:, right, ...] = heatmaps_of_mirrored[:, left, ...]
    flipped_back = flipped_back[..., ::-1]
    if shift:
        flipped_back[:, :, :, 1:] = flipped_back[:, :, :, :-1]
    return (heatmaps + flipped_back) / 2


OFFICIAL = {"quarter": official_quarter, "dark": official_dark, "dark-udp": official_dark_udp}


def nchw(heatmaps):
    return np.ascontiguousarray(heatmaps.transpose(0, 3, 1, 2))
