"""Overlay drawing, checked pixel by pixel on black canvases."""

import numpy as np
import pytest

from app.draw import (RAW_SPEC, SMOOTHED_SPEC, DrawingSpec, draw_box, draw_comparison, draw_pose,
                      draw_status, heatmap_panel, overlay_panel, track_color)
from app.skeleton import KEYPOINT_NAMES, SIDE_COLORS

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
    assert track_color(0) != track_color(1) and track_color(2) == track_color(12)


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


def test_heatmap_panel_tiles_people_side_by_side():
    heatmaps = np.zeros((2, 64, 48, K), np.float32)
    heatmaps[0, 32, 12, 5] = 1.0  # a peak for person 0 on one joint
    heatmaps[0, 31:34, 11:14, 9] = 0.5  # a weaker joint around it: the panel shows the max
    panel = heatmap_panel(heatmaps, size=(240, 160))
    assert panel.shape == (160, 240, 3) and panel.dtype == np.uint8
    # tiles are 160 x 120 (48:64 aspect); person 0's peak lands at (row 80, col 30)
    b, g, r = (int(v) for v in panel[80, 30])
    assert r > 100 and b < 50  # hot = red in JET
    cold = panel[80, 180]  # person 1: all zero = JET's dark blue
    assert cold[0] > 100 and cold[2] < 20
    assert not heatmap_panel(np.zeros((0, 64, 48, K)), size=(50, 40)).any()


def test_heatmap_panel_shrinks_tiles_to_fit_many_people():
    panel = heatmap_panel(np.ones((10, 64, 48, K), np.float32), size=(240, 160))
    lit = np.flatnonzero(panel.any(axis=(0, 2)))
    assert panel.shape == (160, 240, 3) and lit.max() == 239 and panel[:, :, 2].any()


def test_overlay_panel_in_a_corner():
    image = canvas()
    panel = np.full((20, 30, 3), 77, np.uint8)
    overlay_panel(image, panel, corner="bottom-right", alpha=1.0, margin=4)
    assert (image[96:116, 126:156] == 77).all() and image[:96].sum() == 0
    overlay_panel(canvas(10, 10), np.full((50, 50, 3), 9, np.uint8))  # bigger than the image: no crash
