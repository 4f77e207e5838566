"""Heatmaps -> keypoint coordinates (argmax, quarter-pixel, DARK) and the flip-test un-mirroring.

Shapes: heatmaps (N, H, W, K) float32, NHWC, N people, K joints, H x W = 64 x 48 for a 256 x 192 input.
Coordinates are (x, y) in heatmap pixels; `app.crop` maps them to the image.
All methods are vectorised over N and K.
"""

import cv2
import numpy as np

DECODE_METHODS = ("dark", "quarter", "argmax")

# DARK blurs with the Gaussian the heatmaps were trained with (sigma 2); the reference uses an 11 x 11
# kernel, which is what cv2 derives for sigma 2 (0.3 * ((11 - 1) / 2 - 1) + 0.8 = 2).
DARK_SIGMA = 2.0
DARK_KERNEL = 11
_CV_MAX_CHANNELS = 128  # cv2 filters take at most this many channels at once (OpenCV 5)


def argmax_heatmaps(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer peak of each heatmap: (N, H, W, K) -> (coords (N, K, 2) float32 x, y, scores (N, K)).

    scores are the peak values. A heatmap whose peak is not positive gets coords (0, 0) as in the
    official `get_max_preds`, so an empty heatmap decodes to a finite point with score <= 0.
    """
    n, h, w, k = heatmaps.shape
    flat = heatmaps.reshape(n, h * w, k)  # NHWC: a view, no copy
    index = flat.argmax(axis=1)  # (N, K)
    scores = np.take_along_axis(flat, index[:, None, :], axis=1)[:, 0, :].astype(np.float32)
    coords = np.stack([index % w, index // w], axis=-1).astype(np.float32)
    coords[scores <= 0] = 0.0
    return coords, scores


def _gather(heatmaps: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """heatmaps (N, H, W, K) at integer x, y (N, K) per joint -> (N, K). Indices must be in range."""
    n, _, _, k = heatmaps.shape
    return heatmaps[np.arange(n)[:, None], y, x, np.arange(k)[None, :]]


def _quarter_offsets(heatmaps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Official SimpleBaseline refinement: (N, K, 2) offsets of +-0.25 px toward the higher neighbour.

    Why: argmax is quantised to one heatmap pixel (4 input pixels); the true peak lies on the side of
    the higher neighbour, and a quarter pixel is the expected offset for a peak uniformly inside the
    pixel. Each axis is refined where both its neighbours exist (the official code requires that of
    both axes at once; per axis keeps the refinement for peaks along an edge).
    """
    _, h, w, _ = heatmaps.shape
    x = coords[..., 0].astype(np.int64)
    y = coords[..., 1].astype(np.int64)
    inside_x = (x >= 1) & (x <= w - 2)
    inside_y = (y >= 1) & (y <= h - 2)
    xm, xp = np.clip(x - 1, 0, w - 1), np.clip(x + 1, 0, w - 1)
    ym, yp = np.clip(y - 1, 0, h - 1), np.clip(y + 1, 0, h - 1)
    dx = _gather(heatmaps, xp, y) - _gather(heatmaps, xm, y)
    dy = _gather(heatmaps, x, yp) - _gather(heatmaps, x, ym)
    offsets = np.stack([np.sign(dx) * inside_x, np.sign(dy) * inside_y], axis=-1) * 0.25
    return offsets.astype(np.float32)


def _blur_hwnk(heatmaps: np.ndarray, sigma: float, kernel: int) -> np.ndarray:
    """Zero-border Gaussian blur of each map of heatmaps (N, H, W, K); returns (H, W, N, K) float32.

    Zero padding as the DARK reference `gaussian_blur` (the heatmap is zero outside the crop). The
    (H, W, N, K) layout keeps the per-map maximum and the stencil gathers cheap.
    """
    n, h, w, k = heatmaps.shape
    # cv2 blurs the channels of an (H, W, C) image independently: every joint of every person is one
    # channel, in chunks of at most _CV_MAX_CHANNELS (a handful of calls, not one per joint).
    stacked = np.ascontiguousarray(heatmaps.transpose(1, 2, 0, 3), np.float32).reshape(h, w, n * k)
    blurred = np.empty_like(stacked)
    for start in range(0, n * k, _CV_MAX_CHANNELS):
        part = stacked[:, :, start:start + _CV_MAX_CHANNELS]
        out = cv2.GaussianBlur(part, (kernel, kernel), sigma, borderType=cv2.BORDER_CONSTANT)
        blurred[:, :, start:start + _CV_MAX_CHANNELS] = out.reshape(h, w, -1)
    return blurred.reshape(h, w, n, k)


def _dark_offsets(heatmaps: np.ndarray, coords: np.ndarray, peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DARK (Zhang et al., CVPR 2020; ilovepose/DarkPose `get_final_preds`/`taylor`) sub-pixel offsets.

    A Gaussian's log is a quadratic, so one Newton step from the argmax on log(blurred heatmap) lands on
    its centre: offset = -H^-1 g with finite-difference gradient g and Hessian H at the peak, using the
    reference's stencil (second derivatives over two pixels, so it needs two neighbours each side).
    heatmaps (N, H, W, K); coords (N, K, 2) their argmax; peaks (N, K) their maximum values.
    Returns (offsets (N, K, 2) float32, stepped (N, K) bool). No step (offset 0, stepped False) where
    the peak is within 2 px of the border (the stencil does not fit) or the Hessian is not negative
    definite (not a maximum: the step would go the wrong way).
    """
    n, h, w, k = heatmaps.shape
    blurred = _blur_hwnk(heatmaps, DARK_SIGMA, DARK_KERNEL)
    # The reference rescales each blurred map to the raw map's maximum, then clamps at 1e-10 before
    # the log (so empty maps stay finite). The rescale only moves where the clamp bites; it is
    # applied here to the nine values the stencil reads instead of to every pixel.
    blurred_max = blurred.max(axis=(0, 1))
    ratio = np.divide(peaks, blurred_max, out=np.zeros_like(blurred_max), where=blurred_max > 0)
    x = coords[..., 0].astype(np.int64)
    y = coords[..., 1].astype(np.int64)
    inside = (x >= 2) & (x <= w - 3) & (y >= 2) & (y <= h - 3)
    people, joints = np.arange(n)[:, None], np.arange(k)[None, :]

    def log_at(dx: int, dy: int) -> np.ndarray:
        # Clipped indices keep the gather in range; values at border peaks are discarded by `inside`.
        values = blurred[np.clip(y + dy, 0, h - 1), np.clip(x + dx, 0, w - 1), people, joints] * ratio
        return np.log(np.maximum(values.astype(np.float64), 1e-10))

    center = log_at(0, 0)
    dx = 0.5 * (log_at(1, 0) - log_at(-1, 0))
    dy = 0.5 * (log_at(0, 1) - log_at(0, -1))
    dxx = 0.25 * (log_at(2, 0) - 2 * center + log_at(-2, 0))
    dyy = 0.25 * (log_at(0, 2) - 2 * center + log_at(0, -2))
    dxy = 0.25 * (log_at(1, 1) - log_at(1, -1) - log_at(-1, 1) + log_at(-1, -1))
    det = dxx * dyy - dxy * dxy
    # Negative definite (a true maximum): dxx < 0 and det > 0. The small margin keeps flat,
    # numerically singular Hessians (all-equal or empty maps) out of the division.
    stepped = inside & (dxx < -1e-12) & (det > 1e-12)
    safe_det = np.where(stepped, det, 1.0)
    # offset = -H^-1 g, with H^-1 = [[dyy, -dxy], [-dxy, dxx]] / det
    off_x = -(dyy * dx - dxy * dy) / safe_det
    off_y = -(dxx * dy - dxy * dx) / safe_det
    offsets = np.stack([off_x, off_y], axis=-1)
    # A Gaussian's step from its argmax is under a pixel on each axis. A longer one means the
    # quadratic model does not hold there (noise, two peaks side by side, a nearly flat top), and
    # the step can land tens of pixels off the map: no step then.
    stepped &= (np.abs(offsets) <= 1.0).all(axis=-1)
    offsets = offsets * stepped[..., None]
    return offsets.astype(np.float32), stepped


def decode_heatmaps(heatmaps: np.ndarray, method: str = "dark") -> tuple[np.ndarray, np.ndarray]:
    """Keypoints from heatmaps (N, H, W, K).

    method: "dark" (DARK Taylor refinement, the quarter shift where it cannot step), "quarter" (the
    official SimpleBaseline quarter-pixel shift) or "argmax" (integer peak).
    Returns (coords (N, K, 2) float32 x, y in heatmap pixels, scores (N, K) float32 = peak value of the
    raw heatmap). Near-zero or all-equal heatmaps decode to finite values.
    """
    if method not in DECODE_METHODS:
        raise ValueError(f"decode method must be one of {DECODE_METHODS}, not {method!r}")
    heatmaps = np.asarray(heatmaps, np.float32)
    coords, scores = argmax_heatmaps(heatmaps)
    if heatmaps.shape[0] == 0 or method == "argmax":
        return coords, scores
    if method == "quarter":
        return coords + _quarter_offsets(heatmaps, coords), scores
    offsets, stepped = _dark_offsets(heatmaps, coords, scores)
    # Where DARK cannot step (peaks within 2 px of the border, flat maps) fall back to the quarter
    # shift instead of the reference's bare argmax: on sigma-2 Gaussians centred anywhere on the map
    # (11% of them there) it cuts those peaks' mean error from 0.38 to 0.22 px and the whole-map
    # mean from 0.061 to 0.044 px (benchmarks/decode_bench.py).
    fallback = _quarter_offsets(heatmaps, coords)
    return coords + np.where(stepped[..., None], offsets, fallback), scores


def flip_back(heatmaps_flipped: np.ndarray, flip_index, shift: bool = True) -> np.ndarray:
    """Heatmaps predicted on mirrored crops -> heatmaps of the original crops, as the official code.

    heatmaps_flipped: (N, H, W, K). flip_index: length-K permutation (app.skeleton.flip_index()):
    channel j of the result is channel flip_index[j] of the mirrored prediction (left <-> right).
    shift: move the result one pixel right (column 0 keeps its value), as the official
    TEST.SHIFT_HEATMAP. Why: heatmap pixel j sits on input pixel 4j, and mirroring the 192-pixel input
    sends 4j to 191 - 4j = 4 (47.75 - j) while mirroring the 48-pixel heatmap sends j to 47 - j; the
    mirrored heatmap is 0.75 px left of where it belongs, and a whole-pixel shift is the closest fix.
    Returns (N, H, W, K) float32.
    """
    out = np.asarray(heatmaps_flipped, np.float32)[:, :, ::-1, :][..., list(flip_index)]
    out = np.ascontiguousarray(out)
    if shift:
        out[:, :, 1:, :] = out[:, :, :-1, :].copy()
    return out
