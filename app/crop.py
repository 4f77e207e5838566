"""Person boxes -> fixed-size model crops, and crop/heatmap coordinates -> image pixels.

The geometry follows the official SimpleBaseline code (microsoft/human-pose-estimation.pytorch,
lib/dataset/coco.py `_box2cs` and lib/utils/transforms.py `get_affine_transform`/`transform_preds`) so
that trained checkpoints see the crops they were trained on:

- a box becomes a centre and a size with the model's aspect ratio, padded by 1.25;
- the affine maps the centre to (W/2, H/2) of the output and scales uniformly by W / box width
  (no rotation at test time);
- keypoints decoded at heatmap resolution are mapped back with the affine built for the heatmap size,
  so heatmap pixel j of a 48-wide heatmap corresponds to input pixel 4j.

Sizes stay in pixels: the official code divides by pixel_std=200 and multiplies it back inside
`get_affine_transform`, a round trip that changes nothing.

Shapes: N people, K joints; boxes (N, 4) xyxy, centers and sizes (N, 2), matrices (N, 2, 3).
"""

import math

import cv2
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # RGB
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

MIN_BOX_SIZE = 1.0  # pixels: zero, negative or sub-pixel box sides are raised to this


def finite_boxes(boxes: np.ndarray) -> np.ndarray:
    """(N,) bool: rows of boxes (N, 4) whose four coordinates are all finite (no NaN or inf)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.isfinite(boxes).all(axis=1)


def boxes_to_center_scale(
    boxes: np.ndarray, aspect_ratio: float = 192 / 256, padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """Crop centre and size for each box, as the official `_box2cs`.

    boxes: (N, 4) xyxy image pixels. aspect_ratio: model input width / height.
    Returns centers (N, 2) x, y and sizes (N, 2) w, h, both float64 image pixels, with
    w / h == aspect_ratio exactly.

    Robustness: box sides that are zero, negative or under 1 px are raised to 1 px (a degenerate box
    still gets a valid, tiny crop instead of a division by zero). Non-finite boxes are FLAGGED, not
    dropped, so rows stay aligned with the caller's boxes: their centre becomes (0, 0) and their size
    the 1 px minimum, and `finite_boxes(boxes)` tells which rows they are (PoseEstimator does not run
    the model on them and reports zero scores).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    finite = finite_boxes(boxes)
    safe = boxes if finite.all() else np.where(finite[:, None], boxes, 0.0)
    centers = (safe[:, :2] + safe[:, 2:]) / 2
    w, h = np.maximum(safe[:, 2:] - safe[:, :2], MIN_BOX_SIZE).T
    # Widen the short side (never shrink) so the crop has the model's aspect ratio without
    # squashing the person.
    too_wide = w > aspect_ratio * h
    h = np.where(too_wide, w / aspect_ratio, h)
    w = np.where(too_wide, w, h * aspect_ratio)
    # 1.25: detector boxes hug the person; the network was trained with this much context around
    # them, and limbs cut by a tight box (raised hands, feet) stay inside the crop.
    sizes = np.empty((len(boxes), 2))
    sizes[:, 0], sizes[:, 1] = w * padding, h * padding
    return centers, sizes


def crop_transforms(
    centers: np.ndarray, sizes: np.ndarray, output_size: tuple[int, int], udp: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Affine matrices image -> crop and crop -> image, as the official `get_affine_transform`.

    centers, sizes: (N, 2) image pixels (from `boxes_to_center_scale`). output_size: (H, W) of the
    crop or of the heatmap. Returns (forward (N, 2, 3), inverse (N, 2, 3)) float64.
    The centre maps to (W/2, H/2) and the scale is W / size_w on both axes (the official code takes the
    scale from the width only; sizes from `boxes_to_center_scale` have the output's aspect ratio).
    Written in closed form instead of cv2.getAffineTransform on three points: without rotation it is
    a scale and a shift, and the closed form keeps the round trip exact to float64.

    udp: the unbiased geometry (Huang et al., CVPR 2020) of the checkpoints trained with it, as
    MMPose v0.29.0 `get_warp_matrix(0, 2 c, output_size - 1, size)` and `transform_preds(...,
    use_udp=True)`: the box's edges map to pixel centres 0 and W - 1, a scale of (W - 1) / size_w
    across and (H - 1) / size_h down. Why: then heatmap pixel j sits exactly on input pixel
    j (W_in - 1) / (W_hm - 1), and mirroring the input mirrors the heatmap with no residual shift.
    """
    centers = np.asarray(centers, np.float64).reshape(-1, 2)
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    out_h, out_w = output_size
    if udp:
        scale_x = (out_w - 1) / sizes[:, 0]  # (N,)
        scale_y = (out_h - 1) / sizes[:, 1]
        # The box's left edge, centre - size / 2, lands on 0.
        shift_x = -scale_x * (centers[:, 0] - sizes[:, 0] / 2)
        shift_y = -scale_y * (centers[:, 1] - sizes[:, 1] / 2)
    else:
        scale_x = scale_y = out_w / sizes[:, 0]  # (N,)
        shift_x = out_w / 2 - scale_x * centers[:, 0]
        shift_y = out_h / 2 - scale_y * centers[:, 1]
    forward = np.zeros((len(centers), 2, 3))
    forward[:, 0, 0] = scale_x
    forward[:, 1, 1] = scale_y
    forward[:, 0, 2] = shift_x
    forward[:, 1, 2] = shift_y
    inverse = np.zeros((len(centers), 2, 3))
    inverse[:, 0, 0] = 1 / scale_x
    inverse[:, 1, 1] = 1 / scale_y
    inverse[:, 0, 2] = -shift_x / scale_x
    inverse[:, 1, 2] = -shift_y / scale_y
    return forward, inverse


def transform_points(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Apply one affine per person: points (N, K, 2), matrices (N, 2, 3) -> (N, K, 2) float32."""
    points = np.asarray(points, np.float64)
    matrices = np.asarray(matrices, np.float64)
    out = np.einsum("nij,nkj->nki", matrices[:, :, :2], points) + matrices[:, None, :, 2]
    return out.astype(np.float32)


def warp_crops(frame_bgr: np.ndarray, matrices: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Cut one crop per person: frame (Hf, Wf, 3) uint8, matrices (N, 2, 3) image -> crop.

    Returns (N, H, W, 3) uint8 with (H, W) = input_size; bilinear, outside the frame is black (0) as
    in the official test pipeline: bit for bit cv2.warpAffine of the frame with each matrix.

    cv2 warps a 4-channel image 2.7x faster than a 3-channel one (its vector code has no 3-channel
    path: 0.14 against 0.37 ms a 256 x 192 crop, one thread, 2-core AVX2 EPYC), so the part of the frame
    the crops read is first widened to BGRA, then each crop warped from it and the batch narrowed
    back to BGR. The conversion covers only the pixels the warps can read (`_footprint`): the rest of
    the BGRA image is never written and never read, so a small person costs a small conversion.
    """
    out_h, out_w = input_size
    crops = np.empty((len(matrices), out_h, out_w, 3), np.uint8)
    if len(matrices) == 0:
        return crops
    frame_bgr = np.asarray(frame_bgr)
    if frame_bgr.dtype != np.uint8 or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        raise TypeError(f"warp_crops takes uint8 BGR frames (H, W, 3), not {frame_bgr.dtype} {frame_bgr.shape}")
    matrices = np.asarray(matrices, np.float64).reshape(-1, 2, 3)
    x0, y0, x1, y1 = _footprint(matrices, input_size, frame_bgr.shape[:2])
    bgra = np.empty((*frame_bgr.shape[:2], 4), np.uint8)
    if x1 > x0 and y1 > y0:
        cv2.cvtColor(frame_bgr[y0:y1, x0:x1], cv2.COLOR_BGR2BGRA, dst=bgra[y0:y1, x0:x1])
    wide = np.empty((len(matrices), out_h, out_w, 4), np.uint8)
    for i, matrix in enumerate(matrices):  # cv2 warps one image at a time
        cv2.warpAffine(
            bgra, matrix, (out_w, out_h), dst=wide[i],
            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )
    cv2.cvtColor(wide.reshape(-1, out_w, 4), cv2.COLOR_BGRA2BGR, dst=crops.reshape(-1, out_w, 3))
    return crops


def _footprint(matrices: np.ndarray, output_size: tuple[int, int], frame_size: tuple[int, int]
               ) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): a frame rectangle (end exclusive) holding every pixel that warping crops of
    output_size (H, W) with matrices (N, 2, 3) image -> crop can read; the whole frame when a matrix
    cannot be inverted. A bilinear sample at x reads columns floor(x) and floor(x) + 1; cv2 rounds
    the source position to 1/32 pixel, so 2 pixels of margin more than cover it."""
    frame_h, frame_w = frame_size
    out_h, out_w = output_size
    corners = ((0.0, 0.0), (out_w - 1.0, 0.0), (0.0, out_h - 1.0), (out_w - 1.0, out_h - 1.0))
    xs, ys = [], []
    # The inverse map of each crop's corner pixels in plain floats, matrix by matrix: for the few
    # people of a frame numpy's per-call overhead on (N,) arrays costs more than the arithmetic
    # (27 against 4 us for one person), and the warps that follow loop per person anyway.
    for (a, b, tx), (c, d, ty) in matrices.tolist():
        det = a * d - b * c
        if not (all(map(math.isfinite, (a, b, tx, c, d, ty))) and math.isfinite(det) and det != 0):
            return 0, 0, frame_w, frame_h
        for cx, cy in corners:
            dx, dy = cx - tx, cy - ty
            xs.append((d * dx - b * dy) / det)
            ys.append((a * dy - c * dx) / det)
    if not all(map(math.isfinite, xs + ys)):
        return 0, 0, frame_w, frame_h
    x0, y0 = min(max(math.floor(min(xs)) - 2, 0), frame_w), min(max(math.floor(min(ys)) - 2, 0), frame_h)
    x1, y1 = min(max(math.ceil(max(xs)) + 3, 0), frame_w), min(max(math.ceil(max(ys)) + 3, 0), frame_h)
    return x0, y0, x1, y1


def _normalize_table() -> np.ndarray:
    """(1, 256, 3) float32: entry [0, v, c] is (v / 255 - mean[c]) / std[c] for RGB channel c,
    computed with the same float32 operations as the formula itself."""
    values = np.arange(256, dtype=np.float32)[:, None] / 255.0  # (256, 1) float32
    return np.ascontiguousarray((values - IMAGENET_MEAN) / IMAGENET_STD)[None]


_NORMALIZE_TABLE = _normalize_table()


def normalize(crops_bgr: np.ndarray) -> np.ndarray:
    """uint8 BGR crops (N, H, W, 3) -> float32 RGB (N, H, W, 3), (x/255 - mean) / std (ImageNet).

    The whole batch in one pass: a uint8 has 256 values, so each channel's 256 results are computed
    once (IMAGENET_MEAN, IMAGENET_STD) and cv2.LUT looks them up; bit for bit the formula's float32
    result, 4 temporaries fewer. A runner that normalises on its device takes the uint8 crops
    (app.pose.PoseEstimator, `input_dtype`) and applies the same formula with these constants.
    """
    crops_bgr = np.asarray(crops_bgr)
    if crops_bgr.dtype != np.uint8:
        raise TypeError(f"normalize takes uint8 crops, not {crops_bgr.dtype}")
    n, h, w, c = crops_bgr.shape
    if n == 0:
        return np.zeros((0, h, w, c), np.float32)
    # BGR -> RGB on the uint8 bytes (a quarter of the float32 ones), by cv2.cvtColor: numpy's copy
    # of the reversed view walks the bytes one at a time, 25x slower (0.25 ms a person, AVX2 EPYC).
    # cv2 sees the batch as one (N * H, W, 3) image and looks each channel up in its own table.
    image = cv2.cvtColor(np.ascontiguousarray(crops_bgr).reshape(n * h, w, c), cv2.COLOR_BGR2RGB)
    return cv2.LUT(image, _NORMALIZE_TABLE).reshape(n, h, w, c)
