"""Heatmaps -> keypoint coordinates (argmax, quarter-pixel, DARK) and the flip-test un-mirroring.

Shapes: heatmaps (N, H, W, K) float32, NHWC, N people, K joints, H x W = 64 x 48 for a 256 x 192 input.
Coordinates are (x, y) in heatmap pixels; `app.crop` maps them to the image.
All methods are vectorised over N and K.

"quarter" and "dark" are the official decoders, rule for rule (tests/test_decode.py holds per-joint
transcriptions of them and checks equality):
- quarter: microsoft/human-pose-estimation.pytorch lib/core/inference.py `get_final_preds`, and MMPose
  v0.6.0 / v0.29.0 mmpose/core/evaluation/top_down_eval.py `keypoints_from_heatmaps` with
  post_process='default' (the 71.8 AP of res50_coco_256x192).
- dark: MMPose v0.29.0 (same in v0.6.0) `keypoints_from_heatmaps` with post_process='unbiased' (its
  `_gaussian_blur` and `_taylor`; the 72.4 AP of res50_coco_256x192_dark), with its configs' blur
  kernel for the heatmap size (dark_kernel) and one change: a Taylor step that would take the keypoint
  off the heatmap is clipped to its edge.
- dark for UDP checkpoints (`udp=True`): MMPose 1.x `refine_keypoints_dark_udp` (UDPHeatmap.decode; the
  76.2 AP of hrnet_w32_coco_256x192_udp in its model zoo), with the blur kernel and the clip as dark.
"""

import cv2
import numpy as np

DECODE_METHODS = ("dark", "quarter", "argmax")

# MMPose's test_cfg modulate_kernel=11, blurred with cv2.GaussianBlur(..., (11, 11), 0): sigma 0 lets
# cv2 derive it from the size, 0.3 * ((11 - 1) / 2 - 1) + 0.8 = 2, the sigma the targets had.
DARK_KERNEL = 11
# Its 384 x 288 configs (96 x 72 heatmaps, targets of sigma 3) blur with modulate_kernel=17 (sigma
# 2.9), the DARK and the UDP ones alike (MMPose v0.29.0 configs/body/2d_kpt_sview_rgb_img/
# topdown_heatmap/coco/*_384x288_{dark,udp}.py).
DARK_KERNEL_LARGE = 17


def dark_kernel(heatmap_height: int) -> int:
    """The blur kernel MMPose decodes DARK with for heatmaps this tall: 11 for its 64 x 48 maps (256 x
    192 inputs), 17 for its 96 x 72 (384 x 288); other sizes take the nearer of the two."""
    return DARK_KERNEL_LARGE if heatmap_height >= 80 else DARK_KERNEL

DARK_LOG_FLOOR = 1e-10  # `np.log(np.maximum(blurred, 1e-10))` in keypoints_from_heatmaps
_CV_MAX_CHANNELS = 128  # cv2 filters take at most this many channels at once (OpenCV 5)


def argmax_heatmaps(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer peak of each heatmap: (N, H, W, K) -> (coords (N, K, 2) float32 x, y, scores (N, K)).

    scores are the peak values. A heatmap whose peak is not positive gets coords (0, 0) as Microsoft's
    `get_max_preds` and MMPose v0.6.0's `_get_max_preds` (the code the published numbers were
    measured with; MMPose v0.29.0 writes -1 there instead), so it decodes to a finite point on the
    map with score <= 0 and is never refined.
    """
    n, h, w, k = heatmaps.shape
    flat = heatmaps.reshape(n, h * w, k)  # NHWC: a view, no copy
    if n and heatmaps.dtype == np.float32:
        # numpy's argmax across the rows of (H W, K) walks K-long strides, 1.7x slower than cv2's
        # transpose to (K, N H W) and an argmax along contiguous rows (the same first-maximum rule).
        rows = cv2.transpose(np.ascontiguousarray(heatmaps).reshape(n * h * w, k))  # (K, N H W)
        index = rows.reshape(k, n, h * w).argmax(axis=2).T  # (N, K)
    else:
        index = flat.argmax(axis=1)  # (N, K)
    scores = flat[np.arange(n)[:, None], index, np.arange(k)].astype(np.float32)
    coords = np.empty((n, k, 2), np.float32)
    coords[..., 1], coords[..., 0] = np.divmod(index, w)
    coords[~(scores > 0)] = 0.0
    return coords, scores


def _gather(maps: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """maps (H, W, N, K) at integer x, y (N, K) per joint -> (N, K). Indices are clipped into range
    (values read at clipped indices belong to joints the caller does not refine)."""
    h, w, n, k = maps.shape
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    return maps[y, x, np.arange(n)[:, None], np.arange(k)[None, :]]


def _quarter_offsets(heatmaps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """The official quarter shift: (N, K, 2) offsets of +-0.25 px toward the higher neighbour.

    Why: argmax is quantised to one heatmap pixel (4 input pixels); the true peak lies on the side of
    the higher neighbour, and a quarter pixel is the expected offset for a peak uniformly inside the
    pixel. As the official code (`1 < px < W - 1 and 1 < py < H - 1`, see the module docstring), both
    axes shift or neither: only peaks with x in 2..W-2 and y in 2..H-2, so a peak on column 1 or
    row 1 keeps its argmax on both axes. Equal neighbours give sign 0, no shift on that axis.
    """
    _, h, w, _ = heatmaps.shape
    maps = heatmaps.transpose(1, 2, 0, 3)  # (H, W, N, K) view, for _gather
    x = coords[..., 0].astype(np.int64)
    y = coords[..., 1].astype(np.int64)
    inside = (x > 1) & (x < w - 1) & (y > 1) & (y < h - 1)
    dx = _gather(maps, x + 1, y) - _gather(maps, x - 1, y)
    dy = _gather(maps, x, y + 1) - _gather(maps, x, y - 1)
    offsets = np.stack([np.sign(dx), np.sign(dy)], axis=-1) * np.float32(0.25)
    return (offsets * inside[..., None]).astype(np.float32)


def _blur_hwnk(heatmaps: np.ndarray) -> np.ndarray:
    """MMPose's `_gaussian_blur` without its rescale: heatmaps (N, H, W, K) -> (H, W, N, K) float32.

    MMPose pads each map with 5 zeros a side and blurs with cv2's default border; every output pixel
    it keeps then reads only the map and those zeros, which is what BORDER_CONSTANT (zeros) gives
    without the padding.
    """
    n, h, w, k = heatmaps.shape
    # cv2 blurs the channels of an (H, W, C) image independently: every joint of every person is one
    # channel, in chunks of at most _CV_MAX_CHANNELS (a handful of calls, not one per joint).
    stacked = np.ascontiguousarray(heatmaps.transpose(1, 2, 0, 3), np.float32).reshape(h, w, n * k)
    blurred = np.empty_like(stacked)
    for start in range(0, n * k, _CV_MAX_CHANNELS):
        part = stacked[:, :, start:start + _CV_MAX_CHANNELS]
        out = cv2.GaussianBlur(part, (DARK_KERNEL, DARK_KERNEL), 0, borderType=cv2.BORDER_CONSTANT)
        blurred[:, :, start:start + _CV_MAX_CHANNELS] = out.reshape(h, w, -1)
    return blurred.reshape(h, w, n, k)


def _dark_offsets(heatmaps: np.ndarray, coords: np.ndarray, peaks: np.ndarray, kernel: int = DARK_KERNEL
                  ) -> tuple[np.ndarray, np.ndarray]:
    """DARK (Zhang et al., CVPR 2020) Taylor step from the argmax, as MMPose v0.29.0 `_taylor`.

    A Gaussian's log is a quadratic, so one Newton step from the argmax on log(blurred heatmap) lands
    on its centre: offset = -H^-1 g with finite-difference gradient g and Hessian H at the peak, over
    two pixels each side. heatmaps (N, H, W, K); coords (N, K, 2) their argmax; peaks (N, K) their
    maximum values. Returns (offsets (N, K, 2) float32, stepped (N, K) bool), unclipped.

    As the reference: no step where `not (1 < px < W - 2 and 1 < py < H - 2)` (the stencil does not
    fit; the argmax stays), a step wherever the Hessian's determinant is non-zero, whatever its sign
    or size. Not in the reference, where it would produce NaN or raise (never on a real network's
    maps): no step where the blurred map's maximum is 0 (the reference divides by it) or the step is
    not finite.

    Two paths, equal to the reference within DARK_LOCAL_TOLERANCE px (tests/test_decode.py):
    - local (`_local_dark`, nearly every joint of a real network): only the 13 blurred pixels the
      stencil reads are computed, and the reference's rescale is left out, which leaves the log-
      derivatives unchanged (see there);
    - whole map (`_whole_map_dark`): the reference's own steps, for the few joints where the local
      path could not promise that tolerance.
    """
    n, h, w, k = heatmaps.shape
    offsets = np.zeros((n, k, 2), np.float32)
    stepped = np.zeros((n, k), bool)
    x = coords[..., 0].astype(np.int64)
    y = coords[..., 1].astype(np.int64)
    # A non-positive peak decodes to (0, 0), outside the stencil's range, so it never steps.
    people, joints = np.nonzero((x > 1) & (x < w - 2) & (y > 1) & (y < h - 2))
    if len(people) == 0:
        return offsets, stepped
    found, sure = _local_dark(heatmaps, people, joints, x[people, joints], y[people, joints], peaks[people, joints],
                              kernel)
    offsets[people[sure], joints[sure]] = found[sure]
    stepped[people[sure], joints[sure]] = True
    rest = ~sure
    if rest.any():
        p, j = people[rest], joints[rest]
        found, ok = _whole_map_dark(heatmaps[p, :, :, j], x[p, j], y[p, j], peaks[p, j], kernel)
        offsets[p[ok], j[ok]] = found[ok]
        stepped[p[ok], j[ok]] = True
    return offsets, stepped


# The local path's promise: within this many heatmap px of the reference (its float32 rounding
# bounded, see _local_dark), half the 1e-4 px the product asks of DARK, for margin.
DARK_LOCAL_TOLERANCE = 5e-5
_STENCIL = 2  # the Taylor step reads the blurred map up to 2 px from the argmax
_FLOAT32_EPS = 2.0 ** -24  # unit roundoff of float32, the reference's arithmetic


def _local_dark(heatmaps: np.ndarray, people: np.ndarray, joints: np.ndarray, x: np.ndarray, y: np.ndarray,
                peaks: np.ndarray, kernel: int = DARK_KERNEL) -> tuple[np.ndarray, np.ndarray]:
    """The Taylor step of M joints from the 13 blurred pixels it reads around their argmax x, y (M,).

    heatmaps (N, H, W, K); people, joints (M,) which maps; peaks (M,) their maxima (> 0). Returns
    (offsets (M, 2) float32, sure (M,) bool: the offset is within DARK_LOCAL_TOLERANCE of the
    reference's; where not, the caller takes the whole-map path).

    The blur: the reference pads each map with 5 zeros and blurs it with cv2.GaussianBlur (11 x 11,
    sigma 2, border BORDER_REFLECT_101, which never reaches past the padding for the pixels it keeps);
    so a blurred pixel is the kernel over the 11 x 11 raw pixels around it, zeros off the map. Here
    each joint's 15 x 15 raw patch around its argmax (zeros off the map) is cut out, the patches are
    laid side by side in one single-channel image and blurred by the same cv2.GaussianBlur call; the
    middle 5 x 5 of each patch reads only its own patch, and cv2 gives them bit for bit the values it
    gives on the whole padded map (on this machine's OpenCV; tests/test_decode.py checks 2 ulp).

    The rescale: the reference multiplies each blurred map by c = peak / max(blurred map) before the
    log, so that finding c costs the whole blur. Left out, because every value the Taylor step uses
    is a difference of logs, log(c b1) - log(c b2) = log b1 - log b2: the derivatives do not depend
    on c. That holds while the reference's floor np.maximum(c b, 1e-10) does not bite: c >= 1 (the
    blur averages values at most the peak with weights summing to at most 1), so every b >= 1e-10
    (with a margin for rounding) is enough; a joint with a smaller value takes the whole-map path.
    What remains is the reference's float32 rounding of c b, of the log and of the finite
    differences, about eps (1 + |log(c b)|) per log value, with log b <= log(c b) <= log(peak); here
    the logs and the step are float64, close to exact. A step that rounding moves little is kept:
    the first-order bound |ds| <= |H^-1| (|dg| + |dH| |s|) + 4 cond(H) eps |s| (the last term: the
    reference's float32 inverse), with per-entry errors eps (2 (1 + max |log|) + 2) (2 eps: the blur's
    rounding, should a cv2 build round it differently), within DARK_LOCAL_TOLERANCE. Ill-conditioned
    Hessians (noise, flat tops) fail it and take the whole map.
    """
    values = _blurred_stencil(heatmaps, people, joints, x, y, kernel).astype(np.float64)  # (13, M)
    m = len(people)
    sure = (values >= DARK_LOG_FLOOR * 1.001).all(axis=0)  # the floor cannot bite
    offsets = np.zeros((m, 2), np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        logs = np.log(np.where(sure, values, 1.0))  # (13, M)
        dx, dy, dxx, dxy, dyy = _STENCIL_WEIGHTS @ logs  # the reference's finite differences, float64
        det = dxx * dyy - dxy * dxy
        step_x = -(dyy * dx - dxy * dy) / det  # -H^-1 g, the 2 x 2 inverse in closed form
        step_y = -(dxx * dy - dxy * dx) / det
        hessian_norm = np.sqrt(dxx * dxx + 2 * dxy * dxy + dyy * dyy)
        inverse_norm = hessian_norm / np.abs(det)  # Frobenius norm of H^-1
        step_norm = np.hypot(step_x, step_y)
        largest_log = np.maximum(np.abs(logs).max(axis=0), np.abs(np.log(peaks.astype(np.float64))))
        # Per log-derivative entry: the reference's float32 rounding (at most 1.5 eps (1 + |log|)), and
        # 2 eps for the blur (another build of cv2 may round it differently; measured: 1-2 eps).
        error = _FLOAT32_EPS * (2 * (1 + largest_log) + 2)
        bound = inverse_norm * (np.sqrt(2) * error + 2 * error * step_norm
                                + 4 * _FLOAT32_EPS * hessian_norm * step_norm)
        sure &= (det != 0) & (bound <= DARK_LOCAL_TOLERANCE)  # False where bound is NaN
    offsets[sure, 0] = step_x[sure]
    offsets[sure, 1] = step_y[sure]
    return offsets, sure


# The 13 pixels the Taylor step reads, (dx, dy) from the argmax, and the weights that turn their
# logs into the reference's dx, dy, dxx, dxy, dyy (MMPose `_taylor`).
_STENCIL_POINTS = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (2, 0), (-2, 0), (0, 2), (0, -2),
                   (1, 1), (1, -1), (-1, 1), (-1, -1)]
_STENCIL_DX = np.array([p[0] for p in _STENCIL_POINTS])
_STENCIL_DY = np.array([p[1] for p in _STENCIL_POINTS])
_STENCIL_WEIGHTS = np.array([
    # c    x+1   x-1   y+1   y-1   x+2   x-2   y+2   y-2   ++    +-    -+    --
    [0, 0.5, -0.5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # dx
    [0, 0, 0, 0.5, -0.5, 0, 0, 0, 0, 0, 0, 0, 0],  # dy
    [-0.5, 0, 0, 0, 0, 0.25, 0.25, 0, 0, 0, 0, 0, 0],  # dxx
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0.25, -0.25, -0.25, 0.25],  # dxy
    [-0.5, 0, 0, 0, 0, 0, 0, 0.25, 0.25, 0, 0, 0, 0],  # dyy
])


def _blurred_stencil(heatmaps: np.ndarray, people: np.ndarray, joints: np.ndarray, x: np.ndarray, y: np.ndarray,
                     kernel: int = DARK_KERNEL) -> np.ndarray:
    """The reference's blurred maps (before its rescale) at the 13 stencil pixels around x, y (M,):
    heatmaps (N, H, W, K), people, joints (M,) -> (13, M) float32, in _STENCIL_POINTS order.
    Each joint's raw patch (zeros off the map; 15 x 15 for kernel 11) side by side in one image, one
    cv2 call."""
    m = len(people)
    n, h, w, k = heatmaps.shape
    radius = kernel // 2 + _STENCIL  # raw pixels the stencil's blurred pixels read (7 for kernel 11)
    span = np.arange(-radius, radius + 1)
    size = len(span)
    rows = y[None, :] + span[:, None]  # (S, M)
    cols = x[:, None] + span[None, :]  # (M, S)
    # One flat gather, straight into the strip's layout (S, M, S): patch i in columns S i .. S i + S - 1.
    flat = np.ascontiguousarray(heatmaps).reshape(-1)
    # (np.minimum/np.maximum: np.clip costs more than the gather for a few joints.)
    index = ((people * (h * w * k) + joints)[None, :, None]
             + (np.minimum(np.maximum(rows, 0), h - 1) * (w * k))[:, :, None]
             + (np.minimum(np.maximum(cols, 0), w - 1) * k)[None, :, :])
    strip = flat.take(index)
    if rows.min() < 0 or rows.max() >= h or cols.min() < 0 or cols.max() >= w:  # zeros off the map
        on_map = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[None, :, :]
        strip = np.where(on_map, strip, np.float32(0))
    # 16 more zero columns: cv2's vector loop then computes every pixel kept, never its scalar tail
    # loop, whose rounding can differ in the last bit (the reference's pixels come from the vector
    # loop too, on this machine; tests/test_decode.py).
    image = np.zeros((size, m * size + 16), np.float32)
    image[:, :m * size] = strip.reshape(size, m * size)
    blurred = cv2.GaussianBlur(image, (kernel, kernel), 0, borderType=cv2.BORDER_CONSTANT)
    return blurred[:, :m * size].reshape(size, m, size)[radius + _STENCIL_DY, :, radius + _STENCIL_DX]


def _mmpose_blur(maps: np.ndarray, peaks: np.ndarray, kernel: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MMPose's `_gaussian_blur` (1.x: `gaussian_blur`) of M whole maps (M, H, W) with maxima peaks (M,):
    (blurred (H, W, M) float32 before the rescale, ratio (M,) float32 the rescale, nonzero (M,) bool).

    Each map padded with kernel // 2 zeros, as the reference, but the maps side by side in one
    single-channel image (one cv2 call, its fast path); 16 more columns as in _blurred_stencil. The
    reference then multiplies each blurred map by `origin_max / np.max(blurred)`; a caller multiplies
    only the values it reads by `ratio`, the same float32 operations, so they are the same numbers.
    nonzero is False where the blurred map's maximum is 0 (the reference divides by it; ratio 0)."""
    m, h, w = maps.shape
    pad = kernel // 2
    image = np.zeros((h + 2 * pad, m * (w + 2 * pad) + 16), np.float32)
    tiles = image[:, :m * (w + 2 * pad)].reshape(h + 2 * pad, m, w + 2 * pad)
    tiles[pad:-pad, :, pad:-pad] = maps.transpose(1, 0, 2)
    blurred = cv2.GaussianBlur(image, (kernel, kernel), 0, borderType=cv2.BORDER_CONSTANT)
    blurred = blurred[:, :m * (w + 2 * pad)].reshape(h + 2 * pad, m, w + 2 * pad)[pad:-pad, :, pad:-pad]  # (H, M, W)
    blurred = blurred.transpose(0, 2, 1)  # (H, W, M)
    blurred_max = blurred.max(axis=(0, 1))
    nonzero = blurred_max != 0
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite maps (never a real network's)
        ratio = np.divide(peaks.astype(np.float32), blurred_max, out=np.zeros_like(blurred_max), where=nonzero)
    return blurred, ratio, nonzero


def _whole_map_dark(maps: np.ndarray, x: np.ndarray, y: np.ndarray, peaks: np.ndarray, kernel: int = DARK_KERNEL
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The reference's steps for M maps (M, H, W) with argmax x, y and maxima peaks (M,), all inside
    the stencil's range: whole-map blur, rescale, float32 log and np.linalg.inv, bit for bit.
    Returns (offsets (M, 2) float32, stepped (M,) bool)."""
    m, h, w = maps.shape
    blurred, ratio, nonzero = _mmpose_blur(maps, peaks, kernel)
    offsets = np.zeros((m, 2), np.float32)
    index = np.arange(m)

    def log_at(dx: int, dy: int) -> np.ndarray:
        values = blurred[y + dy, x + dx, index] * ratio
        return np.log(np.maximum(values, np.float32(DARK_LOG_FLOOR)))

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # The reference's expressions in its order (float32 rounding depends on it).
        center = log_at(0, 0)
        dx = np.float32(0.5) * (log_at(1, 0) - log_at(-1, 0))
        dy = np.float32(0.5) * (log_at(0, 1) - log_at(0, -1))
        dxx = np.float32(0.25) * (log_at(2, 0) - 2 * center + log_at(-2, 0))
        dxy = np.float32(0.25) * (log_at(1, 1) - log_at(1, -1) - log_at(-1, 1) + log_at(-1, -1))
        dyy = np.float32(0.25) * (log_at(0, 2) - 2 * center + log_at(0, -2))
        step = nonzero & (dxx * dyy - dxy * dxy != 0)
        if step.any():
            hessian = np.stack([dxx[step], dxy[step], dxy[step], dyy[step]], axis=-1).reshape(-1, 2, 2)
            gradient = np.stack([dx[step], dy[step]], axis=-1).reshape(-1, 2, 1)
            inverse = _inverse_2x2(hessian)
            found = (-inverse @ gradient)[..., 0]  # (S, 2) x, y
            ok = np.isfinite(found).all(axis=-1)
            step[step] = ok
            offsets[step] = found[ok]
    return offsets, step


def _inverse_2x2(matrices: np.ndarray) -> np.ndarray:
    """np.linalg.inv of (M, 2, 2) float32, as the reference calls it per matrix; a matrix LAPACK
    finds singular (det != 0 in float32 but a zero pivot, where the reference would raise) gets NaN."""
    try:
        return np.linalg.inv(matrices)
    except np.linalg.LinAlgError:
        out = np.full_like(matrices, np.nan)
        for i, matrix in enumerate(matrices):
            try:
                out[i] = np.linalg.inv(matrix)
            except np.linalg.LinAlgError:
                pass
        return out


# UDP's DARK (MMPose 1.x `refine_keypoints_dark_udp`): the 7 log values its stencil reads, (dx, dy)
# from the argmax.
_UDP_POINTS = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1)]
_UDP_FLOOR, _UDP_CEILING = 1e-3, 50.0  # the reference's np.clip before the log
_EPS_DIAGONAL = float(np.finfo(np.float32).eps)  # `hessian + np.finfo(np.float32).eps * np.eye(2)`


def _udp_neighbours(x: np.ndarray, y: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (7, M) x and y of the _UDP_POINTS from argmax x, y (M,), each axis clamped onto the map
    of size (H, W): the reference pads the log map by repeating its edge, so a neighbour off the map
    reads the edge pixel, which is the argmax's own row or column."""
    h, w = size
    dx = np.array([p[0] for p in _UDP_POINTS])[:, None]
    dy = np.array([p[1] for p in _UDP_POINTS])[:, None]
    ox = np.where((x[None, :] + dx < 0) | (x[None, :] + dx > w - 1), 0, dx)
    oy = np.where((y[None, :] + dy < 0) | (y[None, :] + dy > h - 1), 0, dy)
    return ox, oy


def _dark_udp_offsets(heatmaps: np.ndarray, coords: np.ndarray, peaks: np.ndarray, kernel: int = DARK_KERNEL
                      ) -> np.ndarray:
    """UDP's DARK step from the argmax, as MMPose 1.x `refine_keypoints_dark_udp` (UDPHeatmap.decode):
    (N, K, 2) float64.

    heatmaps (N, H, W, K); coords (N, K, 2) their argmax; peaks (N, K) their maxima; kernel: the
    blur's size (dark_kernel). The reference blurs every whole map as DARK does (zero-padded,
    rescaled to the map's maximum), clips to [0.001, 50], takes the log, pads it by repeating the
    edge and takes one Newton step -(H + eps I)^-1 g, eps float32's, from finite differences over one
    pixel each side, wherever the peak is, the map's edge included. MMPose 0.x's `post_dark_udp`
    differs in its blur (cv2's reflected border, no rescale): on sigma-2 Gaussians within 3 px of the
    edge it misplaces joints by 0.69 heatmap px on average where 1.x's blur gives 0.25 (an ad-hoc
    comparison of the two transcriptions), and MMPose 1.x lists the same checkpoints at 76.2 AP
    against 0.x's 76.0.

    The reference's own operations on whole maps, bit for bit (tests/test_decode.py):
    0.23-0.28 ms a person in batches of 32 (`python -m benchmarks.decode_bench`, this project's 2-core
    AMD EPYC), DARK's local path 0.07. A local path as DARK's was tried: with UDP's one-pixel
    stencil and eps-regularised inverse its rounding bound certified only 2-18% of clean joints, so it
    saved nothing; UDP's checkpoints are HRNets, whose forward costs far more.
    Not in the reference: a joint whose peak is not positive is not stepped (decode_heatmaps puts it
    at (0, 0); MMPose steps from -1 off the map), nor one whose blurred map's maximum is 0 (the
    reference divides by it) or whose step is not finite.
    """
    n, h, w, k = heatmaps.shape
    offsets = np.zeros((n, k, 2))
    people, joints = np.nonzero(peaks > 0)
    m = len(people)
    if m == 0:
        return offsets
    x = coords[people, joints, 0].astype(np.int64)
    y = coords[people, joints, 1].astype(np.int64)
    blurred, ratio, nonzero = _mmpose_blur(heatmaps[people, :, :, joints], peaks[people, joints], kernel)
    ox, oy = _udp_neighbours(x, y, (h, w))
    # (Non-finite maps, never a real network's, give NaN steps here, which are not taken.)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        values = blurred[y[None, :] + oy, x[None, :] + ox, np.arange(m)[None, :]] * ratio  # (7, M) float32
        i_, ix1, ix1_, iy1, iy1_, ix1y1, ix1_y1_ = np.log(np.clip(values, np.float32(_UDP_FLOOR),
                                                                  np.float32(_UDP_CEILING)))
        # The reference's float32 expressions in its order (its rounding depends on it).
        dx = 0.5 * (ix1 - ix1_)
        dy = 0.5 * (iy1 - iy1_)
        dxx = ix1 - 2 * i_ + ix1_
        dyy = iy1 - 2 * i_ + iy1_
        dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
        hessian = np.stack([dxx, dxy, dxy, dyy], axis=-1).reshape(m, 2, 2) + _EPS_DIAGONAL * np.eye(2)
        steps = -(_inverse_2x2(hessian) @ np.stack([dx, dy], axis=-1)[..., None])[..., 0]  # (M, 2) float64
    ok = nonzero & np.isfinite(steps).all(axis=-1)
    offsets[people[ok], joints[ok]] = steps[ok]
    return offsets


def decode_heatmaps(heatmaps: np.ndarray, method: str = "dark", udp: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints from heatmaps (N, H, W, K).

    method: "dark" (MMPose's 'unbiased' DARK Taylor refinement, argmax where it cannot step),
    "quarter" (the official SimpleBaseline quarter-pixel shift) or "argmax" (integer peak).
    udp: the heatmaps come from a checkpoint trained with UDP (app.crop.crop_transforms); "dark" then
    is UDP's own DARK step (MMPose 1.x `refine_keypoints_dark_udp`); the other methods are the same.
    DARK's blur kernel follows the heatmap size as MMPose's configs (dark_kernel: 11 for 64 x 48, 17
    for 96 x 72).
    Returns (coords (N, K, 2) float32 x, y in heatmap pixels, scores (N, K) float32 = peak value of the
    raw heatmap). Every coordinate lies on the map, 0 <= x <= W - 1 and 0 <= y <= H - 1.
    """
    if method not in DECODE_METHODS:
        raise ValueError(f"decode method must be one of {DECODE_METHODS}, not {method!r}")
    heatmaps = np.asarray(heatmaps, np.float32)
    coords, scores = argmax_heatmaps(heatmaps)
    if heatmaps.shape[0] == 0 or method == "argmax":
        return coords, scores
    if method == "quarter":
        return coords + _quarter_offsets(heatmaps, coords), scores
    kernel = dark_kernel(heatmaps.shape[1])
    if udp:
        # float32 minus the float64 step, rounded once, as the reference's in-place `coords -= ...`.
        offsets = _dark_udp_offsets(heatmaps, coords, scores, kernel)
        stepped = (coords.astype(np.float64) + offsets).astype(np.float32)
        return clip_to_map(stepped, heatmaps.shape[1:3]), scores
    offsets, _ = _dark_offsets(heatmaps, coords, scores, kernel)
    return clip_to_map(coords + offsets, heatmaps.shape[1:3]), scores


def clip_to_map(coords: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """coords (N, K, 2) x, y clipped to the heatmap of size (H, W): [0, W - 1] x [0, H - 1].

    Why: on a map with no clean peak (two joints side by side, noise, a flat top) the Hessian is
    nearly singular and the reference's Taylor step can be tens or thousands of pixels long. MMPose
    takes it wherever it lands; here the keypoint stops at the edge of the crop the network saw.
    Clipping instead of refusing keeps the reference's step wherever it stays on the map: on weak
    noisy peaks the unguarded step is closer to the truth than a guarded one
    (benchmarks/decode_bench.py).
    """
    h, w = size
    upper = np.array([w - 1, h - 1], np.float32)
    return np.minimum(np.maximum(coords, np.float32(0)), upper).astype(np.float32)  # np.clip, with less overhead


def flip_back(heatmaps_flipped: np.ndarray, flip_index, shift: bool = True) -> np.ndarray:
    """Heatmaps predicted on mirrored crops -> heatmaps of the original crops, as the official code.

    heatmaps_flipped: (N, H, W, K). flip_index: length-K permutation (app.skeleton.flip_index()):
    channel j of the result is channel flip_index[j] of the mirrored prediction (left <-> right).
    shift: move the result one pixel right (column 0 keeps its value), as the official
    TEST.SHIFT_HEATMAP / MMPose test_cfg shift_heatmap=True. Why: heatmap pixel j sits on input pixel
    4j, and mirroring the 192-pixel input sends 4j to 191 - 4j = 4 (47.75 - j) while mirroring the
    48-pixel heatmap sends j to 47 - j; the mirrored heatmap is 0.75 px left of where it belongs, and
    a whole-pixel shift is the closest fix.
    Returns (N, H, W, K) float32. The flip test then averages (heatmaps + flip_back(...)) * 0.5
    (app.pose), as MMPose v0.29.0 TopDown.forward_test, and decodes the average.
    """
    out = np.asarray(heatmaps_flipped, np.float32)[:, :, ::-1, :][..., list(flip_index)]
    out = np.ascontiguousarray(out)
    if shift:
        out[:, :, 1:, :] = out[:, :, :-1, :].copy()
    return out
