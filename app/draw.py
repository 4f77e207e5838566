"""The overlay: skeletons, boxes, a status block, heatmap panels, raw vs smoothed comparison.

Styled after MediaPipe's drawing_utils: a `DrawingSpec` says colour, line thickness and joint
radius; with no colour, joints and edges take their side's colour from `app.skeleton` (left and
right differ, so a mirrored or swapped pose is visible at a glance). Every function draws in place
on a uint8 BGR (H, W, 3) image and returns it. Points that are NaN, infinite or outside the image
are skipped, never drawn and never an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from app.skeleton import JOINT_SIDE, SIDE_COLORS, SKELETON

Color = tuple[int, int, int]  # BGR

# OpenCV draws at sub-pixel precision when coordinates are fixed-point with this many fraction
# bits; without it a keypoint decoded at x = 10.4 would be drawn at 10.
SHIFT = 4
_SCALE = 1 << SHIFT


@dataclass(frozen=True)
class DrawingSpec:
    """color: BGR, or None for the side colours; thickness: edge width in px; radius: joint radius in px."""

    color: Color | None = None
    thickness: int = 2
    radius: int = 3


POSE_SPEC = DrawingSpec()
# The Kalman lesson's comparison: raw detections thin and red over the smoothed track thick and green.
RAW_SPEC = DrawingSpec(color=(0, 0, 255), thickness=1, radius=2)
SMOOTHED_SPEC = DrawingSpec(color=(0, 220, 0), thickness=3, radius=4)

# Box colours cycled by track id, so a person keeps the same colour while tracked.
TRACK_COLORS: tuple[Color, ...] = (
    (75, 25, 230), (75, 180, 60), (25, 225, 255), (200, 130, 0), (48, 130, 245),
    (180, 30, 145), (240, 240, 70), (230, 50, 240), (60, 245, 210), (128, 128, 0),
)
UNTRACKED_COLOR: Color = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def visible_joints(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray | None,
                   threshold: float) -> np.ndarray:
    """(K,) bool: finite, inside the image and scored at or above `threshold` (all if scores is None)."""
    height, width = image.shape[:2]
    x, y = keypoints[:, 0], keypoints[:, 1]
    with np.errstate(invalid="ignore"):  # NaN compares False, which is what we want
        inside = np.isfinite(x) & np.isfinite(y) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
        if scores is not None:
            inside &= np.asarray(scores) >= threshold
    return inside


def _fixed(point) -> tuple[int, int]:
    return int(round(float(point[0]) * _SCALE)), int(round(float(point[1]) * _SCALE))


def draw_pose(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray | None = None,
              threshold: float = 0.3, spec: DrawingSpec = POSE_SPEC) -> np.ndarray:
    """Draw one person: keypoints (K, 2) x, y pixels, scores (K,). Joints at or above `threshold`
    as filled circles, and each skeleton edge whose two ends are both drawn; edges first, so the
    joints stay on top."""
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    shown = visible_joints(image, keypoints, scores, threshold)
    for a, b, side in SKELETON:
        if a < len(shown) and b < len(shown) and shown[a] and shown[b]:
            color = spec.color or SIDE_COLORS[side]
            cv2.line(image, _fixed(keypoints[a]), _fixed(keypoints[b]), color, spec.thickness,
                     cv2.LINE_AA, SHIFT)
    for joint in np.flatnonzero(shown):
        side = JOINT_SIDE[joint] if joint < len(JOINT_SIDE) else "center"
        color = spec.color or SIDE_COLORS[side]
        cv2.circle(image, _fixed(keypoints[joint]), spec.radius * _SCALE, color, -1, cv2.LINE_AA, SHIFT)
    return image


def track_color(track_id: int | None) -> Color:
    return UNTRACKED_COLOR if track_id is None else TRACK_COLORS[int(track_id) % len(TRACK_COLORS)]


def draw_box(image: np.ndarray, box, track_id: int | None = None, score: float | None = None,
             color: Color | None = None, thickness: int = 2) -> np.ndarray:
    """Draw a person box (4,) xyxy pixels with a "#id score" label; the colour follows the track id."""
    box = np.asarray(box, dtype=np.float64).reshape(4)
    if not np.isfinite(box).all():
        return image
    height, width = image.shape[:2]
    # Clip first: cv2 takes int32 coordinates and a box from a wild detection may overflow them.
    x1, x2 = np.clip(box[[0, 2]], -1, width)
    y1, y2 = np.clip(box[[1, 3]], -1, height)
    if x2 <= x1 or y2 <= y1:
        return image
    color = color or track_color(track_id)
    cv2.rectangle(image, _fixed((x1, y1)), _fixed((x2, y2)), color, thickness, cv2.LINE_AA, SHIFT)
    parts = ([] if track_id is None else [f"#{track_id}"]) + ([] if score is None else [f"{score:.2f}"])
    if parts:
        label = " ".join(parts)
        (text_w, text_h), baseline = cv2.getTextSize(label, FONT, 0.45, 1)
        # Label above the box, or inside its top when the box touches the image top.
        left = int(max(0, min(x1, width - text_w - 4)))
        top = int(y1 - text_h - baseline - 4) if y1 - text_h - baseline - 4 >= 0 else int(max(y1, 0))
        cv2.rectangle(image, (left, top), (left + text_w + 4, top + text_h + baseline + 4), color, -1)
        cv2.putText(image, label, (left + 2, top + text_h + 2), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return image


def draw_status(image: np.ndarray, lines: list[str], origin: tuple[int, int] = (8, 8),
                scale: float = 0.5) -> np.ndarray:
    """A block of text lines (FPS, per-stage ms, people, Kalman on/off) in white on a darkened
    background at `origin` (top-left), clipped to the image."""
    if not lines:
        return image
    sizes = [cv2.getTextSize(line, FONT, scale, 1) for line in lines]
    line_h = max(h + baseline for (_, h), baseline in sizes) + 4
    block_w = max(w for (w, _), _ in sizes) + 12
    height, width = image.shape[:2]
    x0, y0 = origin
    x1, y1 = min(width, x0 + block_w), min(height, y0 + line_h * len(lines) + 8)
    if x1 <= x0 or y1 <= y0:
        return image
    # Darken rather than paint black, so the video under the block still shows through a little.
    region = image[y0:y1, x0:x1]
    region[:] = (region * 0.3).astype(np.uint8)
    for i, line in enumerate(lines):
        baseline_y = y0 + 4 + line_h * (i + 1) - sizes[i][1] - 2
        cv2.putText(image, line, (x0 + 6, baseline_y), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def heatmap_panel(heatmaps: np.ndarray, size: tuple[int, int] = (240, 160)) -> np.ndarray:
    """(W, H) = `size` BGR panel: each person's max-over-joints heatmap, heatmaps (N, h, w, K),
    side by side in a JET colormap, tiles keeping the h:w aspect and shrunk to fit.

    Values are clipped to [0, 1] rather than stretched per person, so a weak, unsure heatmap looks
    weak; the model is trained on Gaussians that peak at 1."""
    panel_w, panel_h = size
    panel = np.zeros((panel_h, panel_w, 3), np.uint8)
    heatmaps = np.asarray(heatmaps)
    if heatmaps.ndim != 4 or len(heatmaps) == 0:
        return panel
    count, h, w, _ = heatmaps.shape
    tile_h, tile_w = panel_h, panel_h * w / h
    if count * tile_w > panel_w:
        shrink = panel_w / (count * tile_w)
        tile_h, tile_w = tile_h * shrink, tile_w * shrink
    tile_h, tile_w = max(1, int(tile_h)), max(1, int(tile_w))
    for i, person in enumerate(heatmaps):
        strongest = np.nan_to_num(person.max(axis=-1), nan=0.0)
        gray = (np.clip(strongest, 0.0, 1.0) * 255).astype(np.uint8)
        tile = cv2.applyColorMap(cv2.resize(gray, (tile_w, tile_h), interpolation=cv2.INTER_LINEAR),
                                 cv2.COLORMAP_JET)
        x = i * tile_w
        if x + tile_w > panel_w:
            break
        panel[:tile_h, x:x + tile_w] = tile
    return panel


def overlay_panel(image: np.ndarray, panel: np.ndarray, corner: str = "top-right", alpha: float = 0.8,
                  margin: int = 8) -> np.ndarray:
    """Blend `panel` into a corner ("top-left", "top-right", "bottom-left", "bottom-right") of the
    image; alpha 1 pastes it opaque. A panel larger than the image is cropped."""
    height, width = image.shape[:2]
    panel = panel[: max(0, height - 2 * margin), : max(0, width - 2 * margin)]
    ph, pw = panel.shape[:2]
    if ph == 0 or pw == 0:
        return image
    vertical, horizontal = corner.split("-")
    y = margin if vertical == "top" else height - margin - ph
    x = margin if horizontal == "left" else width - margin - pw
    region = image[y:y + ph, x:x + pw]
    region[:] = cv2.addWeighted(panel, alpha, region, 1.0 - alpha, 0.0)
    return image


def draw_comparison(image: np.ndarray, raw: np.ndarray, smoothed: np.ndarray, scores: np.ndarray | None,
                    threshold: float = 0.3, raw_spec: DrawingSpec = RAW_SPEC,
                    smoothed_spec: DrawingSpec = SMOOTHED_SPEC) -> np.ndarray:
    """Raw keypoints (K, 2) thin over smoothed keypoints (K, 2) thick, the same scores (K,) for both:
    where they disagree the jitter the filter removed is visible."""
    draw_pose(image, smoothed, scores, threshold, smoothed_spec)
    draw_pose(image, raw, scores, threshold, raw_spec)
    return image
