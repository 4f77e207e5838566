"""Overlay drawing, checked pixel by pixel on black canvases."""

import numpy as np
import pytest

from app.draw import (RAW_SPEC, SMOOTHED_SPEC, TRACK_COLORS, UNTRACKED_COLOR, DrawingSpec, box_label_rect,
                      contrast_ratio, draw_box, draw_box_label, draw_comparison, draw_pose, draw_status,
                      heatmap_grid, line_width, overlay_panel, status_size, text_color_on, track_color, wrap_items)
from app.skeleton import JOINT_LABELS, KEYPOINT_NAMES, PALETTE, SIDE_COLORS

K = len(KEYPOINT_NAMES)
J = {name: i for i, name in enumerate(KEYPOINT_NAMES)}


def canvas(height=120, width=160):
    return np.zeros((height, width, 3), np.uint8)


def pose_with(points: dict):
    """keypoints (K, 2) NaN except `points` {name: (x, y)}, scores (K,) 1 where given, else 0."""
    keypoints = np.full((K, 2), np.nan, np.float32)
    scores = np.zeros(K, np.float32)
    for name, xy in points.items():
        keypoints[J[name]] = xy
        scores[J[name]] = 1.0
    return keypoints, scores


def test_joint_pixel_has_its_side_colour_at_subpixel_position():
    image = canvas()
    keypoints, scores = pose_with({"left_wrist": (30.4, 40.6), "right_wrist": (90.0, 20.0), "nose": (120.0, 100.0)})
    assert draw_pose(image, keypoints, scores) is image  # in place
    assert tuple(image[41, 30]) == SIDE_COLORS["left"]  # row = round(y), column = round(x)
    assert tuple(image[20, 90]) == SIDE_COLORS["right"]
    assert tuple(image[100, 120]) == SIDE_COLORS["center"]
    assert tuple(image[60, 60]) == (0, 0, 0)


def test_edges_take_their_side_colour():
    image = canvas()
    keypoints, scores = pose_with({"left_hip": (20, 30), "left_knee": (140, 30),
                                   "right_hip": (20, 90), "right_knee": (140, 90)})
    draw_pose(image, keypoints, scores)
    assert tuple(image[30, 80]) == SIDE_COLORS["left"]  # midway along hip-knee, far from the joints
    assert tuple(image[90, 80]) == SIDE_COLORS["right"]
    assert tuple(image[60, 80]) == (0, 0, 0)  # nothing between the legs
    assert tuple(image[60, 20]) == SIDE_COLORS["center"]  # the hip-hip edge


def test_joint_below_threshold_leaves_the_image_unchanged():
    image = canvas()
    keypoints, scores = pose_with({"left_hip": (20, 30), "left_knee": (140, 30)})
    scores[:] = 0.29
    draw_pose(image, keypoints, scores, threshold=0.3)
    assert not image.any()
    scores[J["left_knee"]] = 0.3  # at the threshold counts as shown, the hip still does not
    draw_pose(image, keypoints, scores, threshold=0.3)
    assert tuple(image[30, 140]) == SIDE_COLORS["left"] and tuple(image[30, 80]) == (0, 0, 0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e30, -5.0, 160.0])
def test_nan_and_outside_points_are_skipped(bad):
    image = canvas()
    keypoints = np.full((K, 2), bad, np.float32)
    draw_pose(image, keypoints, np.ones(K, np.float32))
    draw_comparison(image, keypoints, keypoints, None)
    assert not image.any()


def test_an_edge_with_one_nan_end_is_not_drawn():
    image = canvas()
    keypoints, scores = pose_with({"left_hip": (20, 30), "left_knee": (140, 30)})
    keypoints[J["left_hip"]] = np.nan  # scored 1 but nowhere
    draw_pose(image, keypoints, scores)
    assert tuple(image[30, 140]) == SIDE_COLORS["left"] and tuple(image[30, 80]) == (0, 0, 0)


def test_spec_colour_overrides_sides():
    image = canvas()
    keypoints, scores = pose_with({"left_hip": (20, 30), "left_knee": (140, 30)})
    draw_pose(image, keypoints, scores, spec=DrawingSpec(color=(1, 2, 3), thickness=3, radius=5))
    assert tuple(image[30, 80]) == (1, 2, 3) and tuple(image[34, 140]) == (1, 2, 3)  # radius 5 reaches y+4


def test_comparison_draws_raw_thin_over_smoothed_thick():
    image = canvas()
    smoothed, scores = pose_with({"left_hip": (20, 60), "left_knee": (140, 60)})
    raw = smoothed.copy()
    raw[J["left_knee"]] = (140, 20)  # the raw knee jittered away
    draw_comparison(image, raw, smoothed, scores)
    assert tuple(image[60, 140]) == SMOOTHED_SPEC.color
    assert tuple(image[20, 140]) == RAW_SPEC.color
    assert tuple(image[60, 20]) == RAW_SPEC.color  # shared hip: raw on top
    assert tuple(image[62, 80]) == SMOOTHED_SPEC.color  # the thick line is wider than the thin one


def test_box_outline_label_and_robustness():
    image = canvas()
    draw_box(image, (40, 50, 120, 110), track_id=3, score=0.91)
    assert tuple(image[80, 40]) == track_color(3)  # left side of the box
    assert tuple(image[80, 80]) == (0, 0, 0)  # inside stays clear
    assert (image[30:49, 40:100] == track_color(3)).all(axis=-1).any()  # label background above the box
    before = image.copy()
    draw_box(image, (np.nan, 0, 10, 10), track_id=1)
    draw_box(image, (50, 50, 40, 40))  # inverted
    assert (image == before).all()
    draw_box(image, (-1e12, -1e12, 1e12, 1e12), score=0.5)  # no crash, clipped
    draw_box(canvas(1, 1), (0, 0, 1, 1), track_id=12345)


def test_track_colours_differ_and_repeat():
    assert len(set(TRACK_COLORS)) == len(TRACK_COLORS)
    assert track_color(0) != track_color(1) and track_color(2) == track_color(2 + len(TRACK_COLORS))


def test_status_block_darkens_its_background_and_writes_text():
    image = np.full((120, 160, 3), 200, np.uint8)
    lines = ["FPS 24.8", "detect 45 ms", "Kalman on"]
    draw_status(image, lines)
    block = image[8:60, 8:80]
    assert (block <= 60).mean() > 0.5  # mostly darkened
    assert (block == 255).all(axis=-1).any()  # white text
    assert (image[100:, 100:] == 200).all()  # the rest untouched
    draw_status(canvas(4, 4), lines)  # smaller than the block: clipped, no crash
    draw_status(canvas(), [])


def test_heatmap_grid_labels_each_joint_and_rings_its_peak():
    heatmaps = np.zeros((64, 48, K), np.float32)
    heatmaps[40, 12, J["left_wrist"]] = 1.0  # a peak at row 40, column 12 of the 64 x 48 map
    panel = heatmap_grid(heatmaps, tile_w=48, columns=6, labels=JOINT_LABELS, title="#5 heatmaps",
                         title_color=PALETTE["blue"], scale=0.4)
    title_h = int(np.flatnonzero((panel[:, 0] == PALETTE["blue"]).all(axis=-1)).max()) + 1
    label_h = (panel.shape[0] - title_h) // 3 - 64  # 3 rows of (label strip + 64 px tile)
    assert panel.shape[1] == 6 * 48 and panel.shape[0] == title_h + 3 * (label_h + 64)
    assert (panel[title_h - 1, 100:] == PALETTE["blue"]).all()  # the title bar in the track's colour
    assert (panel[:title_h] == PALETTE["white"]).all(axis=-1).any()  # its text white (blue is dark)
    # left_wrist is joint 9: row 1, column 3; its label strip holds white text, its tile a ring
    x0, y0 = 3 * 48, title_h + label_h + 64
    assert (panel[y0:y0 + label_h, x0:x0 + 48] > 200).all(axis=-1).sum() > 10
    tile = panel[y0 + label_h:y0 + label_h + 64, x0:x0 + 48].astype(int)
    ring = max(2, 48 // 10)
    centre = np.array([40.5, 12.5])
    rows, cols = np.nonzero((tile >= 150).all(axis=-1))  # the white ring (viridis has no such grey: min channel 37)
    distance = np.hypot(rows + 0.5 - centre[0], cols + 0.5 - centre[1])
    assert len(rows) >= 8 and np.abs(distance - ring).max() < 1.5
    assert (tile[40, 12] > tile[10, 40]).any()  # the peak is brighter than the empty map around it
    empty = panel[y0 + label_h:y0 + label_h + 64, 0:48]  # joint 6 (right_shoulder) is all zero: no ring
    assert not (empty >= 150).all(axis=-1).any()
    assert len(np.unique(empty.reshape(-1, 3), axis=0)) == 1  # one flat colour: viridis at 0


def test_heatmap_grid_survives_nan_and_tiny_tiles():
    heatmaps = np.full((64, 48, K), np.nan, np.float32)
    panel = heatmap_grid(heatmaps, tile_w=4, columns=3, labels=JOINT_LABELS, title="#1", title_color=(0, 0, 0))
    assert panel.shape[1] == 12 and panel.dtype == np.uint8


def test_palette_is_one_set_of_colours_and_boxes_keep_clear_of_limbs():
    palette = set(PALETTE.values())
    used = set(SIDE_COLORS.values()) | set(TRACK_COLORS) | {UNTRACKED_COLOR, RAW_SPEC.color, SMOOTHED_SPEC.color}
    assert used <= palette
    limbs = set(SIDE_COLORS.values()) | {RAW_SPEC.color, SMOOTHED_SPEC.color}
    nearest = min(np.linalg.norm(np.subtract(box, limb)) for box in TRACK_COLORS for limb in limbs)
    assert nearest > 90  # the old green box (75, 180, 60) was 0 away from nothing but 60 from the smoothed green
    assert RAW_SPEC.color != SMOOTHED_SPEC.color and SIDE_COLORS["left"] != SIDE_COLORS["right"]


@pytest.mark.parametrize("color", TRACK_COLORS + (UNTRACKED_COLOR,))
def test_label_text_is_black_or_white_whichever_reads(color):
    text = text_color_on(color)
    assert text in (PALETTE["black"], PALETTE["white"])
    assert contrast_ratio(text, color) >= 4.5  # WCAG AA for normal text
    image = canvas(120, 200)
    box = (60, 60, 180, 110)
    draw_box_label(image, box, track_id=48, color=color, font_scale=0.6)
    left, top, right, bottom = box_label_rect(image, box, "#48", 0.6)
    label = image[top:bottom, left:right]
    assert (label == color).all(axis=-1).mean() > 0.5  # filled with the box colour
    assert (label == text).all(axis=-1).sum() >= 5  # the text's core pixels are exactly black or white
    other = PALETTE["white"] if text == PALETTE["black"] else PALETTE["black"]
    assert not (label == other).all(axis=-1).any()


def test_dark_label_gets_white_text_light_label_black():
    assert text_color_on(PALETTE["blue"]) == PALETTE["white"]
    assert text_color_on(PALETTE["yellow"]) == PALETTE["black"]
    assert contrast_ratio((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)


def test_box_without_label_draws_only_the_outline():
    image = canvas()
    draw_box(image, (40, 50, 120, 110), track_id=3, label=False)
    assert tuple(image[80, 40]) == track_color(3)
    assert not image[:45].any()  # nothing above the box


def test_wrap_items_keeps_every_line_inside_the_width():
    items = ["11.7 FPS", "2 people", "kalman on", "a_very_long_item_without_spaces_that_cannot_fit_anywhere"]
    lines = wrap_items(items, 100, 0.4)
    assert all(line_width(line, 0.4) <= 100 for line in lines)
    assert "".join(lines).replace(" ", "") == "".join(items).replace(" ", "")  # nothing lost, order kept
    assert lines[0] == "11.7 FPS  2 people"  # two short items share a line


def test_status_block_swatches_are_exactly_their_colour():
    image = np.full((60, 200, 3), 128, np.uint8)
    lines = [[("left", SIDE_COLORS["left"]), ("  ", None), ("right", SIDE_COLORS["right"])]]
    draw_status(image, lines, origin=(4, 4), scale=0.5)
    width, height, _ = status_size(lines, 0.5)
    for color in (SIDE_COLORS["left"], SIDE_COLORS["right"]):
        solid = (image == color).all(axis=-1)
        rows, cols = np.nonzero(solid)
        assert solid.sum() >= 6 * 8 and rows.max() - rows.min() >= 5 and cols.max() - cols.min() >= 7
    assert line_width(lines[0], 0.5) + 8 <= width and (image[4 + height:] == 128).all()


def test_overlay_panel_in_a_corner():
    image = canvas()
    panel = np.full((20, 30, 3), 77, np.uint8)
    overlay_panel(image, panel, corner="bottom-right", alpha=1.0, margin=4)
    assert (image[96:116, 126:156] == 77).all() and image[:96].sum() == 0
    overlay_panel(canvas(10, 10), np.full((50, 50, 3), 9, np.uint8))  # bigger than the image: no crash
