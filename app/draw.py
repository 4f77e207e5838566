"""The overlay: skeletons, boxes and labels, text blocks with colour swatches, heatmap grids, raw vs
smoothed comparison.

Styled after MediaPipe's drawing_utils: a `DrawingSpec` says colour, line thickness and joint
radius; with no colour, joints and edges take their side's colour from `app.skeleton` (left and
right differ, so a mirrored or swapped pose is visible at a glance). Every colour comes from the one
palette in `app.skeleton.PALETTE`. Every drawing function draws in place on a uint8 BGR (H, W, 3)
image and returns it. Points that are NaN, infinite or outside the image are skipped, never drawn
and never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from app.skeleton import JOINT_SIDE, PALETTE, SIDE_COLORS, SKELETON

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
# The comparison overlay: raw detections thin over the smoothed track thick, in a pair that stays
# apart for colour-blind eyes (vermillion against sky blue; never red against green).
RAW_SPEC = DrawingSpec(color=PALETTE["vermillion"], thickness=1, radius=2)
SMOOTHED_SPEC = DrawingSpec(color=PALETTE["sky_blue"], thickness=3, radius=4)

# Box and label colours cycled by track id, so a person keeps the same colour while tracked. None of
# them is a skeleton side colour or a comparison colour, so a box never reads as a limb.
TRACK_COLORS: tuple[Color, ...] = (
    PALETTE["reddish_purple"], PALETTE["bluish_green"], PALETTE["yellow"], PALETTE["blue"],
)
UNTRACKED_COLOR: Color = PALETTE["grey"]
TEXT_COLOR: Color = PALETTE["white"]  # text on the darkened blocks
FONT = cv2.FONT_HERSHEY_SIMPLEX


@lru_cache(maxsize=4096)
def text_size(text: str, scale: float, thickness: int = 1) -> tuple[tuple[int, int], int]:
    """cv2.getTextSize in FONT, remembered: the HUD measures the same words every frame while
    wrapping them (about 200 calls a frame, 30 us each on a 2-core CPU)."""
    return cv2.getTextSize(text, FONT, scale, thickness)


def relative_luminance(color: Color) -> float:
    """WCAG 2 relative luminance of a BGR colour, 0 (black) to 1 (white)."""
    def linear(channel: int) -> float:
        c = channel / 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    b, g, r = color
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)


def contrast_ratio(a: Color, b: Color) -> float:
    """WCAG 2 contrast ratio of two colours, 1 (same) to 21 (black on white)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@lru_cache(maxsize=256)
def text_color_on(background: Color) -> Color:
    """Black or white, whichever reads better on `background` (the higher WCAG contrast)."""
    black, white = PALETTE["black"], PALETTE["white"]
    return black if contrast_ratio(black, background) >= contrast_ratio(white, background) else white


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


def _clipped_box(image: np.ndarray, box) -> tuple[float, float, float, float] | None:
    """xyxy clipped just outside the image, or None for a box that is not finite or empty."""
    box = np.asarray(box, dtype=np.float64).reshape(4)
    if not np.isfinite(box).all():
        return None
    height, width = image.shape[:2]
    # Clip first: cv2 takes int32 coordinates and a box from a wild detection may overflow them.
    x1, x2 = np.clip(box[[0, 2]], -1, width)
    y1, y2 = np.clip(box[[1, 3]], -1, height)
    if x2 <= x1 or y2 <= y1:
        return None
    return float(x1), float(y1), float(x2), float(y2)


def box_label_text(track_id: int | None, score: float | None) -> str:
    return " ".join(([] if track_id is None else [f"#{track_id}"]) + ([] if score is None else [f"{score:.2f}"]))


def box_label_rect(image: np.ndarray, box, text: str, font_scale: float = 0.45, thickness: int = 1,
                   avoid=()) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of a box's label: above the box, or inside its top when the box
    touches the image top; None when the box is not drawn. avoid: (x1, y1, x2, y2) rectangles the
    label must not go under (the HUD's blocks): a label that would is moved down, below them, as
    long as it stays inside the box and the image."""
    clipped = _clipped_box(image, box)
    if clipped is None or not text:
        return None
    x1, y1, _, y2 = clipped
    height, width = image.shape[:2]
    (text_w, text_h), baseline = text_size(text, font_scale, thickness)
    pad = max(2, text_h // 4)
    label_w, label_h = text_w + 2 * pad, text_h + baseline + 2 * pad
    left = int(max(0, min(x1, width - label_w)))
    top = int(y1 - label_h) if y1 - label_h >= 0 else int(max(y1, 0))
    for _ in range(len(avoid)):  # each move clears one rectangle; a chain of them needs one move each
        hit = [r for r in avoid if left < r[2] and r[0] < left + label_w and top < r[3] and r[1] < top + label_h]
        if not hit:
            break
        below = int(max(r[3] for r in hit)) + 1
        if below + label_h > min(height, y2):
            break  # no room below the HUD inside the box: leave it where it was
        top = below
    return left, top, left + label_w, top + label_h


def draw_box(image: np.ndarray, box, track_id: int | None = None, score: float | None = None,
             color: Color | None = None, thickness: int = 2, label: bool = True,
             font_scale: float = 0.45) -> np.ndarray:
    """Draw a person box (4,) xyxy pixels, and with `label` its "#id score" label; the colour follows
    the track id. In a crowd draw every outline, then the skeletons, then the labels
    (`draw_box_label`), so no limb covers a label."""
    clipped = _clipped_box(image, box)
    if clipped is None:
        return image
    x1, y1, x2, y2 = clipped
    color = color or track_color(track_id)
    cv2.rectangle(image, _fixed((x1, y1)), _fixed((x2, y2)), color, thickness, cv2.LINE_AA, SHIFT)
    if label:
        draw_box_label(image, box, track_id, score, color, font_scale)
    return image


def draw_box_label(image: np.ndarray, box, track_id: int | None = None, score: float | None = None,
                   color: Color | None = None, font_scale: float = 0.45, thickness: int = 1,
                   avoid=()) -> np.ndarray:
    """The "#id score" label of a box, filled with the box colour, text in black or white by contrast;
    clear of the `avoid` rectangles where the box leaves room (box_label_rect)."""
    text = box_label_text(track_id, score)
    rect = box_label_rect(image, box, text, font_scale, thickness, avoid)
    if rect is None:
        return image
    color = color or track_color(track_id)
    left, top, right, bottom = rect
    cv2.rectangle(image, (left, top), (right - 1, bottom - 1), color, -1)
    (_, text_h), baseline = text_size(text, font_scale, thickness)
    pad = max(2, text_h // 4)
    cv2.putText(image, text, (left + pad, top + pad + text_h), FONT, font_scale, text_color_on(color),
                thickness, cv2.LINE_AA)
    return image


# A line of a text block: plain text, or segments (text, swatch colour or None) drawn one after
# another, each swatch a small filled rectangle before its text (a colour legend).
Segment = tuple[str, Color | None]


def _segments(line) -> list[Segment]:
    return [(line, None)] if isinstance(line, str) else list(line)


def _swatch_size(scale: float, thickness: int) -> tuple[int, int]:
    (_, text_h), _ = text_size("Ag", scale, thickness)
    return max(6, int(round(text_h * 1.6))), max(4, text_h)  # w, h


def line_width(line, scale: float, thickness: int = 1) -> int:
    """Pixels a line of a text block takes, swatches included."""
    swatch_w, _ = _swatch_size(scale, thickness)
    gap = text_size(" ", scale, thickness)[0][0]
    width = 0
    for text, swatch in _segments(line):
        if swatch is not None:
            width += swatch_w + gap
        width += text_size(text, scale, thickness)[0][0] if text else 0
    return width


def _split_to_fit(text: str, swatch, max_width: int, scale: float, thickness: int) -> list[Segment]:
    """`text` as pieces no wider than `max_width` (with the swatch on the first piece): split at
    spaces, and a word too wide alone between its characters."""
    def fits(piece: str, with_swatch) -> bool:
        return line_width([(piece, with_swatch)], scale, thickness) <= max_width

    if fits(text, swatch):
        return [(text, swatch)]
    tokens: list[tuple[str, bool]] = []  # (token, glued to the one before: no space between)
    for word in text.split(" "):
        if fits(word, swatch):
            tokens.append((word, False))
        else:
            tokens += [(char, i > 0) for i, char in enumerate(word)]
    pieces: list[Segment] = []
    current = ""
    for token, glued in tokens:
        joined = current + token if glued or not current else f"{current} {token}"
        if current and not fits(joined, swatch if not pieces else None):
            pieces.append((current, swatch if not pieces else None))
            current = token
        else:
            current = joined
    pieces.append((current, swatch if not pieces else None))
    return pieces


def wrap_items(items: list, max_width: int, scale: float, thickness: int = 1, sep: str = "  ") -> list:
    """Packs items (strings, or (text, swatch colour) segments) greedily into lines no wider than
    `max_width` px, `sep` between items on a line; an item too wide alone is split, so nothing runs
    off the edge. Lines are strings when no item has a swatch, else lists of segments."""
    lines: list[list[Segment]] = []
    for item in items:
        text, swatch = (item, None) if isinstance(item, str) else item
        for piece in _split_to_fit(text, swatch, max_width, scale, thickness):
            if lines:
                candidate = lines[-1] + [(sep, None), piece]
                if line_width(candidate, scale, thickness) <= max_width:
                    lines[-1] = candidate
                    continue
            lines.append([piece])
    if all(swatch is None for line in lines for _, swatch in line):
        return ["".join(text for text, _ in line) for line in lines]
    return lines


def status_padding(scale: float = 0.5, thickness: int = 1) -> int:
    """Px between a `draw_status` block's edge and its text; a block is 2 * this + 2 wider than its text."""
    (_, text_h), _ = text_size("Ag", scale, thickness)
    return max(3, text_h // 3)


def status_size(lines: list, scale: float = 0.5, thickness: int = 1) -> tuple[int, int, int]:
    """(width, height, line height) in px of the block `draw_status` draws for these lines."""
    if not lines:
        return 0, 0, 0
    (_, text_h), baseline = text_size("Ag", scale, thickness)
    pad = status_padding(scale, thickness)
    line_h = text_h + baseline + pad
    width = max(line_width(line, scale, thickness) for line in lines) + 2 * pad + 2
    return width, line_h * len(lines) + pad, line_h


def draw_status(image: np.ndarray, lines: list, origin: tuple[int, int] = (8, 8), scale: float = 0.5,
                thickness: int = 1, colors: list[Color | None] | None = None) -> np.ndarray:
    """A block of text lines (FPS, per-stage ms, people, Kalman on/off) on a darkened background at
    `origin` (top-left), clipped to the image. A line is a string or a list of (text, swatch colour)
    segments; text is white unless `colors` gives the line its own colour."""
    if not lines:
        return image
    block_w, block_h, line_h = status_size(lines, scale, thickness)
    (_, text_h), baseline = text_size("Ag", scale, thickness)
    pad = status_padding(scale, thickness)
    height, width = image.shape[:2]
    x0, y0 = origin
    x1, y1 = min(width, x0 + block_w), min(height, y0 + block_h)
    if x1 <= x0 or y1 <= y0:
        return image
    # Darken rather than paint black, so the video under the block still shows through a little.
    region = image[y0:y1, x0:x1]
    region[:] = cv2.convertScaleAbs(region, alpha=0.3)
    swatch_w, swatch_h = _swatch_size(scale, thickness)
    gap = text_size(" ", scale, thickness)[0][0]
    for i, line in enumerate(lines):
        color = (colors[i] if colors is not None and i < len(colors) else None) or TEXT_COLOR
        baseline_y = y0 + pad + line_h * i + text_h
        x = x0 + pad + 1
        for text, swatch in _segments(line):
            if swatch is not None:
                # No anti-aliasing: the swatch is exactly the colour it stands for.
                cv2.rectangle(image, (x, baseline_y - swatch_h), (x + swatch_w - 1, baseline_y - 1), swatch, -1)
                x += swatch_w + gap
            if text:
                cv2.putText(image, text, (x, baseline_y), FONT, scale, color, thickness, cv2.LINE_AA)
                x += text_size(text, scale, thickness)[0][0]
    return image


def _fit_text_scale(texts, width: int, scale: float, thickness: int) -> float:
    """The largest scale up to `scale` at which every text fits in `width` px."""
    widest = max(text_size(text, scale, thickness)[0][0] for text in texts)
    return scale if widest <= width else scale * width / max(widest, 1)


@lru_cache(maxsize=1)
def _viridis() -> np.ndarray:
    """(256, 3) uint8 BGR: OpenCV's viridis colour map as a lookup table."""
    return cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(-1, 1), cv2.COLORMAP_VIRIDIS).reshape(256, 3)


def heatmap_grid(heatmaps: np.ndarray, tile_w: int, columns: int, labels: tuple[str, ...], title: str,
                 title_color: Color, scale: float = 0.4, thickness: int = 1) -> np.ndarray:
    """One person's heatmaps (h, w, K) as a labelled grid: a title bar (e.g. the track id, in its box
    colour), then K tiles `tile_w` px wide keeping the h:w aspect, `columns` a row, each under its
    joint's label with its peak ringed, and a last tile "all" with the maximum over joints.

    Viridis, which reads in grey and for colour-blind eyes. Values are clipped to [0, 1] rather
    than stretched, so a weak, unsure heatmap looks weak; the model is trained on Gaussians that
    peak at 1."""
    heatmaps = np.nan_to_num(np.asarray(heatmaps, np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    h, w, k = heatmaps.shape
    maps = [heatmaps[..., j] for j in range(k)] + [heatmaps.max(axis=-1)]
    names = list(labels[:k]) + [f"j{j}" for j in range(len(labels), k)] + ["all"]
    tile_w = max(4, int(tile_w))
    tile_h = max(4, int(round(tile_w * h / w)))
    rows = -(-len(maps) // columns)
    label_scale = _fit_text_scale(names, tile_w - 5, scale, thickness)  # a gap between neighbours' labels
    (_, label_text_h), label_base = text_size("Ag", label_scale, thickness)
    label_h = label_text_h + label_base + 2
    title_scale = _fit_text_scale([title], columns * tile_w - 6, scale, thickness)
    (_, title_text_h), title_base = text_size("Ag", title_scale, thickness)
    title_h = title_text_h + title_base + 6
    panel = np.full((title_h + rows * (label_h + tile_h), columns * tile_w, 3), 32, np.uint8)
    panel[:title_h] = title_color
    cv2.putText(panel, title, (3, 3 + title_text_h), FONT, title_scale, text_color_on(title_color), thickness,
                cv2.LINE_AA)
    ring = max(2, tile_w // 10)
    # Colour the small maps, all at once, then enlarge each: cv2.applyColorMap costs 0.5 ms a call
    # whatever the size (it rebuilds its table), 10 ms a frame for 18 maps.
    coloured = _viridis()[(np.clip(np.stack(maps), 0.0, 1.0) * 255).astype(np.uint8)]
    for i, (name, heatmap) in enumerate(zip(names, maps)):
        x, y = (i % columns) * tile_w, title_h + (i // columns) * (label_h + tile_h)
        cv2.putText(panel, name, (x + 2, y + 1 + label_text_h), FONT, label_scale, TEXT_COLOR, thickness,
                    cv2.LINE_AA)
        tile = cv2.resize(coloured[i], (tile_w, tile_h), interpolation=cv2.INTER_LINEAR)
        if heatmap.max() > 0:
            row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
            centre = ((col + 0.5) * tile_w / w, (row + 0.5) * tile_h / h)
            cv2.circle(tile, _fixed(centre), (ring + 1) * _SCALE, PALETTE["black"], 1, cv2.LINE_AA, SHIFT)
            cv2.circle(tile, _fixed(centre), ring * _SCALE, PALETTE["white"], 1, cv2.LINE_AA, SHIFT)
        panel[y + label_h:y + label_h + tile_h, x:x + tile_w] = tile
    return panel


def heatmap_grid_size(heatmap_shape: tuple[int, int, int], tile_w: int, columns: int, scale: float = 0.4,
                      thickness: int = 1) -> tuple[int, int]:
    """(width, height) of `heatmap_grid`'s panel, without drawing it (labels at `scale` at most)."""
    h, w, k = heatmap_shape
    tile_w = max(4, int(tile_w))
    tile_h = max(4, int(round(tile_w * h / w)))
    rows = -(-(k + 1) // columns)
    (_, text_h), base = text_size("Ag", scale, thickness)
    return columns * tile_w, text_h + base + 6 + rows * (text_h + base + 2 + tile_h)


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
                    smoothed_spec: DrawingSpec = SMOOTHED_SPEC,
                    smoothed_scores: np.ndarray | None = None) -> np.ndarray:
    """Raw keypoints (K, 2) thin over smoothed keypoints (K, 2) thick: where they disagree the jitter
    the filter removed is visible. scores (K,) for the raw ones, and for the smoothed ones unless
    `smoothed_scores` (K,) is given."""
    draw_pose(image, smoothed, scores if smoothed_scores is None else smoothed_scores, threshold, smoothed_spec)
    draw_pose(image, raw, scores, threshold, raw_spec)
    return image
