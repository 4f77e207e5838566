"""What the window shows (app.views), checked on the pixels of synthetic frames and FrameResults."""

import cv2
import numpy as np
import pytest

from app import draw
from app.pipeline import FrameResult, Person
from app.skeleton import KEYPOINT_NAMES, SIDE_COLORS
from app.views import (COMPARE_MODES, KEY_LEGEND, PAUSED_COLOR, STAGES, ViewState, annotate, compose_view,
                       handle_key, render, style_for)

K = len(KEYPOINT_NAMES)
J = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
GREY = 110  # the synthetic frames' background: no palette colour, no HUD colour

# A standing figure facing the camera, in units of its head size, origin at the nose (x right, y down).
FIGURE = np.array([
    [0, 0], [0.1, -0.1], [-0.1, -0.1], [0.2, 0], [-0.2, 0], [0.5, 0.8], [-0.5, 0.8], [0.7, 1.6], [-0.7, 1.6],
    [0.8, 2.4], [-0.8, 2.4], [0.35, 2.6], [-0.35, 2.6], [0.4, 3.6], [-0.4, 3.6], [0.45, 4.6], [-0.45, 4.6],
], np.float32)


def figure_person(track_id: int, nose: tuple[float, float], size: float, raw_shift=(0.0, 0.0)) -> Person:
    """A person whose smoothed keypoints are FIGURE at `nose`, scaled by `size` px, raw ones shifted."""
    smoothed = np.asarray(nose, np.float32) + FIGURE * size
    raw = smoothed + np.asarray(raw_shift, np.float32)
    box = np.array([smoothed[:, 0].min() - size * 0.3, smoothed[:, 1].min() - size * 0.5,
                    smoothed[:, 0].max() + size * 0.3, smoothed[:, 1].max() + size * 0.2], np.float32)
    return Person(track_id=track_id, box=box, box_score=0.9, raw_keypoints=raw, smoothed_keypoints=smoothed,
                  scores=np.full(K, 0.9, np.float32), visible=np.ones(K, bool), kalman=True)


def frame_of(width: int, height: int) -> np.ndarray:
    return np.full((height, width, 3), GREY, np.uint8)


def result_of(people, heatmaps=None, timings=None) -> FrameResult:
    timings = timings if timings is not None else {"detect": 12.0, "crop": 3.0, "model": 70.0, "decode": 1.0,
                                                   "track": 0.4, "smooth": 0.8}
    return FrameResult(people=list(people), detected=True, timings_ms=timings, heatmaps=heatmaps)


def heatmaps_for(people) -> np.ndarray:
    """(N, 64, 48, K): one Gaussian per joint, away from the map's edges."""
    yy, xx = np.mgrid[0:64, 0:48]
    maps = np.zeros((len(people), 64, 48, K), np.float32)
    for k in range(K):
        maps[:, :, :, k] = np.exp(-((yy - 10 - 2 * k) ** 2 + (xx - 8 - 2 * k) ** 2) / 8.0)
    return maps


def view(frame, result, state, kalman=True, fps=12.5, threshold=0.3, runs_on=""):
    return compose_view(annotate(frame, result, state, kalman, threshold), frame, result, state, kalman, fps,
                        threshold, runs_on)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W) bool: where two images of the same size differ."""
    assert a.shape == b.shape
    return (a != b).any(axis=-1)


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def is_color(image: np.ndarray, color) -> np.ndarray:
    return (image == np.asarray(color, np.uint8)).all(axis=-1)


# --- annotate: what is recorded --------------------------------------------------------------------

def test_annotate_is_the_frame_size_and_ignores_the_view_keys():
    frame = frame_of(320, 240)
    result = result_of([figure_person(1, (160, 60), 25)])
    plain = annotate(frame, result, ViewState(), True, 0.3)
    assert plain.shape == frame.shape and (frame == GREY).all()  # a copy: the frame is untouched
    assert is_color(plain, SIDE_COLORS["left"]).sum() > 50 and is_color(plain, SIDE_COLORS["right"]).sum() > 50
    busy = ViewState(paused=True, heatmaps=True, compare="side", legend=True)
    assert (annotate(frame, result, busy, True, 0.3) == plain).all()


def test_annotate_draws_raw_or_smoothed_by_kalman():
    frame = frame_of(320, 240)
    person = figure_person(1, (160, 40), 30, raw_shift=(40, 0))
    left_wrist_smoothed = np.round(person.smoothed_keypoints[J["left_wrist"]]).astype(int)
    left_wrist_raw = np.round(person.raw_keypoints[J["left_wrist"]]).astype(int)
    on = annotate(frame, result_of([person]), ViewState(), True, 0.3)
    off = annotate(frame, result_of([person]), ViewState(), False, 0.3)
    assert tuple(on[left_wrist_smoothed[1], left_wrist_smoothed[0]]) == SIDE_COLORS["left"]
    assert tuple(off[left_wrist_raw[1], left_wrist_raw[0]]) == SIDE_COLORS["left"]
    assert tuple(on[left_wrist_raw[1], left_wrist_raw[0]]) == (GREY,) * 3


def test_box_labels_are_drawn_on_top_of_other_peoples_limbs():
    frame = frame_of(400, 300)
    front = figure_person(1, (200, 120), 30)
    style = style_for(frame.shape)
    label = draw.box_label_rect(frame, front.box, "#1", style.label_scale)
    left, top, right, bottom = label
    assert bottom - top >= 8
    # Someone behind whose left forearm runs straight through the label, wrist to elbow.
    behind = figure_person(2, (100, 300), 30)
    row = (top + bottom) // 2
    behind.smoothed_keypoints[J["left_elbow"]] = (left - 30, row)
    behind.smoothed_keypoints[J["left_wrist"]] = (right + 30, row)
    image = annotate(frame, result_of([front, behind]), ViewState(), True, 0.3)
    assert tuple(image[row, left - 15]) == SIDE_COLORS["left"]  # the forearm is there, left of the label
    inside = image[top:bottom, left:right]
    assert not is_color(inside, SIDE_COLORS["left"]).any()  # ... and nowhere on the label
    assert is_color(inside, draw.track_color(1)).mean() > 0.5
    text = np.abs(inside.astype(int) - draw.text_color_on(draw.track_color(1))).max(axis=-1) < 60
    assert text.sum() >= 5  # its text, in black or white by contrast
    # The old order (each person's box and label, then their skeleton) would put the limb on top.
    old = frame.copy()
    for person in (front, behind):
        draw.draw_box(old, person.box, person.track_id, font_scale=style.label_scale)
        draw.draw_pose(old, person.smoothed_keypoints, person.scores)
    assert is_color(old[top:bottom, left:right], SIDE_COLORS["left"]).any()


# --- the HUD ---------------------------------------------------------------------------------------

def test_paused_mark_is_shown_only_when_paused():
    frame = frame_of(320, 240)
    result = result_of([figure_person(4, (160, 105), 25)])
    playing = view(frame, result, ViewState(paused=False))
    paused = view(frame, result, ViewState(paused=True))
    border = style_for(frame.shape).border
    for image, expected in ((paused, True), (playing, False)):
        edges = [image[:border], image[-border:], image[:, :border], image[:, -border:]]
        assert all(is_color(edge, PAUSED_COLOR).all() for edge in edges) == expected
        inner = image[border:-border, border:-border]
        assert (is_color(inner, PAUSED_COLOR).sum() >= 20) == expected  # the word PAUSED, in the same colour
    # Nothing else in the frame is hidden by the mark: below the HUD the person's pixels are the same.
    x1, y1, x2, y2 = result.people[0].box.astype(int)
    assert (paused[y1 + 50:y2, x1:x2] == playing[y1 + 50:y2, x1:x2]).all()


def test_paused_mark_frames_the_whole_side_by_side_view():
    frame = frame_of(200, 150)
    image = view(frame, result_of([]), ViewState(paused=True, compare="side"))
    assert image.shape[1] > 2 * 200
    assert is_color(image[:, -2:], PAUSED_COLOR).all() and is_color(image[-2:], PAUSED_COLOR).all()


def test_key_legend_toggles_with_question_mark_and_fits_inside_320x240():
    frame = frame_of(320, 240)
    state = ViewState()
    result = result_of([])
    without = view(frame, result, state)
    assert handle_key(ord("?"), state, pipeline=None) is True and state.legend
    with_legend = view(frame, result, state)
    diff = changed(without, with_legend)
    x1, y1, x2, y2 = bounding_box(diff)
    assert x1 >= 2 and y1 >= 2 and x2 <= 320 - 3 and y2 <= 240 - 3  # not cut at any edge
    legend = with_legend[y1:y2 + 1, x1:x2 + 1]
    # Every key row is there: one band of white text per wrapped line, at least one per key.
    text_rows = (legend >= 250).all(axis=-1).any(axis=1)
    bands = np.count_nonzero(np.diff(text_rows.astype(int)) == 1) + int(text_rows[0])
    assert bands >= len(KEY_LEGEND)
    assert (legend.astype(int) <= GREY * 0.3 + 1).all(axis=-1).mean() > 0.6  # on a darkened block
    handle_key(ord("?"), state, pipeline=None)
    assert not state.legend and (view(frame, result, state) == without).all()


@pytest.mark.parametrize("size, everything", [((320, 240), True), ((240, 320), True), ((1920, 1080), True),
                                              ((160, 120), False)])
def test_whole_hud_stays_inside_any_frame(size, everything):
    width, height = size
    frame = frame_of(width, height)
    # Everything at once; a 160 x 120 frame has no room for that at a readable size (8 px text): there
    # the plain HUD must fit.
    if everything:
        state = ViewState(paused=True, legend=True, heatmaps=True, smoothing="offline Kalman (8 frames behind)")
        image = view(frame, result_of([]), state, runs_on="cuda:0 float16")
    else:
        image = view(frame, result_of([]), ViewState(paused=True))
    border = style_for(frame.shape).border
    inner = changed(image, frame)[border:-border, border:-border]
    x1, y1, x2, y2 = bounding_box(inner)
    assert x1 >= 1 and y1 >= 1 and x2 <= inner.shape[1] - 2 and y2 <= inner.shape[0] - 2


def test_hud_text_scales_with_the_frame():
    heights, cap = {}, {}
    for width, height in ((320, 240), (1920, 1080)):
        frame = frame_of(width, height)
        image = view(frame, result_of([]), ViewState())
        _, y1, _, y2 = bounding_box(changed(image, frame))
        heights[height] = y2 - y1
        text_rows = np.flatnonzero((image[y1:y2] >= 250).all(axis=-1).any(axis=1))
        first_line = text_rows[: np.argmax(np.diff(text_rows) > 1) + 1]  # "12.5 FPS ...": capitals, digits
        cap[height] = len(first_line)
    assert heights[240] <= 240 * 0.45  # room left for the video
    assert cap[240] >= 8  # readable on a 320 x 240 camera
    assert cap[1080] >= 1.8 * cap[240]  # and across a room on a large screen


def test_stage_times_keep_their_order_on_detection_and_tracking_frames():
    frame = frame_of(640, 480)
    person = figure_person(1, (400, 150), 40)
    # The pipeline fills the dict in this order on a detection frame ...
    detection = {"detect": 30.0, "track": 0.5, "crop": 2.0, "model": 66.0, "decode": 1.0, "smooth": 0.7}
    # ... and in this one on a tracking frame; same numbers, so the HUD must be the same pixels.
    tracking = {"detect": 30.0, "crop": 2.0, "model": 66.0, "decode": 1.0, "track": 0.5, "smooth": 0.7}
    a = view(frame, result_of([person], timings=detection), ViewState())
    b = view(frame, result_of([person], timings=tracking), ViewState())
    assert changed(a, frame).sum() > 1000 and (a == b).all()
    assert list(detection) != list(tracking)  # the two dicts really are in different orders


def test_a_stage_that_did_not_run_keeps_its_place():
    frame = frame_of(640, 480)
    full = view(frame, result_of([], timings=dict.fromkeys(STAGES, 1.0)), ViewState())
    partial = view(frame, result_of([], timings={"detect": 1.0, "track": 1.0, "smooth": 1.0}), ViewState())
    style = style_for(frame.shape)
    # "ms detect 1 crop -" against "ms detect 1 crop 1": the same up to "crop"; the block's width
    # differs (its right edge), so compare left of it: only the stage-times line may differ.
    left = cv2.getTextSize("ms  detect 1  crop", draw.FONT, style.scale, style.thickness)[0][0] + 20
    diff = changed(full[:, :left], partial[:, :left])
    assert diff.any()
    _, y1, _, y2 = bounding_box(diff)
    (_, text_h), baseline = cv2.getTextSize("Ag", draw.FONT, style.scale, style.thickness)
    assert y2 - y1 <= text_h + baseline


def test_colour_legend_shows_the_skeleton_colours():
    frame = frame_of(640, 480)
    image = view(frame, result_of([]), ViewState())  # nobody: every palette pixel comes from the legend
    hud = image[:240, :]
    for colour in (SIDE_COLORS["left"], SIDE_COLORS["right"], SIDE_COLORS["center"]):
        solid = is_color(hud, colour)
        rows, cols = np.nonzero(solid)
        assert solid.sum() >= 40 and np.ptp(rows) >= 5 and np.ptp(cols) >= 8, colour  # a swatch, not text
    overlay = view(frame, result_of([]), ViewState(compare="overlay"))[:240]
    for colour in (draw.RAW_SPEC.color, draw.SMOOTHED_SPEC.color):
        assert is_color(overlay, colour).sum() >= 40


def test_hud_says_where_the_networks_run():
    frame = frame_of(640, 480)
    plain = view(frame, result_of([]), ViewState())
    device = view(frame, result_of([]), ViewState(), runs_on="cuda:0 float16")
    x1, y1, x2, y2 = bounding_box(changed(plain, device))
    assert y2 < 120 and x1 < 320  # in the HUD's first lines, nowhere else


# --- compare (c) -----------------------------------------------------------------------------------

def test_c_cycles_off_side_by_side_overlay():
    state = ViewState()
    seen = []
    for _ in range(4):
        assert handle_key(ord("c"), state, pipeline=None) is True
        seen.append(state.compare)
    assert seen == ["side", "overlay", "off", "side"] and set(seen) == set(COMPARE_MODES)


def test_side_by_side_is_two_labelled_panes_of_the_frame_size():
    width, height = 320, 240
    frame = frame_of(width, height)
    person = figure_person(2, (200, 70), 22, raw_shift=(-60, 0))  # raw keypoints 60 px to the left
    state = ViewState(compare="side")
    image = view(frame, result_of([person]), state)
    strip = image.shape[0] - height
    gap = image.shape[1] - 2 * width
    assert 8 <= strip <= 40 and 0 < gap <= 10
    raw_pane, smooth_pane = image[strip:, :width], image[strip:, width + gap:]
    assert raw_pane.shape == smooth_pane.shape == frame.shape
    for name in ("left_ankle", "right_knee"):
        (sx, sy), (rx, ry) = (np.round(person.smoothed_keypoints[J[name]]).astype(int),
                              np.round(person.raw_keypoints[J[name]]).astype(int))
        side = SIDE_COLORS["left" if name.startswith("left") else "right"]
        assert tuple(raw_pane[ry, rx]) == side and tuple(raw_pane[sy, sx]) == (GREY,) * 3
        assert tuple(smooth_pane[sy, sx]) == side and tuple(smooth_pane[ry, rx]) == (GREY,) * 3
    # Each pane has its title above it, centred: its white text is as wide as the title's text.
    style = style_for(frame.shape)
    for pane_x, title in ((0, "raw"), (width + gap, "smoothed (Kalman)")):
        cols = np.flatnonzero((image[:strip, pane_x:pane_x + width] >= 200).all(axis=-1).any(axis=0))
        expected = cv2.getTextSize(title, draw.FONT, style.scale, style.thickness)[0][0]
        assert abs((cols.max() - cols.min() + 1) - expected) <= 6, title  # getTextSize counts side bearings
        assert abs((cols.max() + cols.min()) / 2 - width / 2) <= 4
    # The active smoother names the right pane.
    offline = view(frame, result_of([person]), ViewState(compare="side", smoothing="offline"))
    cols = np.flatnonzero((offline[:strip, width + gap:] >= 200).all(axis=-1).any(axis=0))
    expected = cv2.getTextSize("smoothed (offline)", draw.FONT, style.scale, style.thickness)[0][0]
    assert abs((cols.max() - cols.min() + 1) - expected) <= 6


def test_overlay_draws_raw_thin_over_smoothed_in_colour_blind_safe_colours():
    frame = frame_of(320, 240)
    person = figure_person(2, (200, 60), 25, raw_shift=(-50, 0))
    image = view(frame, result_of([person]), ViewState(compare="overlay"))
    assert image.shape == frame.shape
    (sx, sy), (rx, ry) = (np.round(person.smoothed_keypoints[J["left_ankle"]]).astype(int),
                          np.round(person.raw_keypoints[J["left_ankle"]]).astype(int))
    assert tuple(image[sy, sx]) == draw.SMOOTHED_SPEC.color and tuple(image[ry, rx]) == draw.RAW_SPEC.color
    assert not is_color(image, (0, 0, 255)).any() and not is_color(image, (0, 220, 0)).any()  # no red on green


def test_compose_view_leaves_annotated_alone_and_render_is_both():
    frame = frame_of(320, 240)
    result = result_of([figure_person(1, (160, 60), 25)], heatmaps=heatmaps_for([0]))
    state = ViewState(heatmaps=True, legend=True, paused=True)
    annotated = annotate(frame, result, state, True, 0.3)
    before = annotated.copy()
    composed = compose_view(annotated, frame, result, state, True, 9.0, 0.3, "cpu")
    assert (annotated == before).all()
    assert (render(frame, result, state, True, 9.0, 0.3, "cpu") == composed).all()


# --- heatmaps (h) ----------------------------------------------------------------------------------

@pytest.mark.parametrize("nose", [(150, 250), (500, 250), (150, 120), (500, 120), (320, 120)])
def test_heatmap_panel_never_covers_the_person_it_shows(nose):
    frame = frame_of(640, 480)
    shown = figure_person(3, nose, 30)
    other = figure_person(8, (40 if nose[0] > 320 else 600, 200), 20)
    result = result_of([shown, other], heatmaps=heatmaps_for([0, 1]))
    off = view(frame, result, ViewState())
    on = view(frame, result, ViewState(heatmaps=True))
    assert on.shape == off.shape  # room in a corner at 640 x 480: the panel goes over the video
    diff = changed(off, on)
    x1, y1, x2, y2 = shown.box.astype(int)
    assert not diff[max(0, y1 - 1):y2 + 2, max(0, x1 - 1):x2 + 2].any()
    # The panel is there: a large region, in viridis, with the shown person's colour as its title bar.
    assert diff.sum() > 200 * 150
    assert is_color(on, draw.track_color(3)).sum() - is_color(off, draw.track_color(3)).sum() > 1000


def test_heatmap_panel_goes_beside_when_the_person_fills_the_frame():
    frame = frame_of(640, 480)
    giant = figure_person(5, (320, 60), 85)
    giant.box = np.array([5, 5, 635, 475], np.float32)
    result = result_of([giant], heatmaps=heatmaps_for([0]))
    off = view(frame, result, ViewState())
    on = view(frame, result, ViewState(heatmaps=True))
    assert on.shape[0] == 480 and on.shape[1] > 640 + 100
    diff = changed(off, on[:, :640])
    _, _, _, y2 = bounding_box(diff)
    assert y2 < 120  # only the HUD's line naming the heatmaps changed over the video


def test_tab_chooses_whose_heatmaps():
    frame = frame_of(640, 480)
    people = [figure_person(3, (120, 120), 30), figure_person(9, (520, 120), 30)]
    result = result_of(people, heatmaps=heatmaps_for(people))
    state = ViewState(heatmaps=True)
    first = view(frame, result, state)
    assert state.shown_tracks == (3, 9) and state.heatmap_track is None
    assert handle_key(9, state, pipeline=None) is True and state.heatmap_track == 9  # Tab
    second = view(frame, result, state)
    off = view(frame, result, ViewState())
    for image, shown in ((first, people[0]), (second, people[1])):
        x1, y1, x2, y2 = shown.box.astype(int)
        assert (image[y1 + 40:y2, x1:x2] == off[y1 + 40:y2, x1:x2]).all()  # below the HUD, untouched
        assert is_color(image, draw.track_color(shown.track_id)).sum() - \
            is_color(off, draw.track_color(shown.track_id)).sum() > 1000  # its colour titles the panel
    assert handle_key(ord("n"), state, pipeline=None) and state.heatmap_track == 3  # n wraps around


def test_heatmaps_not_yet_computed_or_nobody_there():
    frame = frame_of(320, 240)
    for result in (result_of([figure_person(1, (160, 60), 25)], heatmaps=None), result_of([])):
        image = view(frame, result, ViewState(heatmaps=True, paused=True))
        assert image.shape == frame.shape
    assert handle_key(9, ViewState(), pipeline=None) is False  # Tab with nobody shown: nothing to do


# --- keys and robustness ---------------------------------------------------------------------------

def test_keys_toggle_and_report_a_redraw():
    class Pipeline:
        kalman = True

    pipeline, state = Pipeline(), ViewState()
    assert handle_key(ord("k"), state, pipeline) is True and pipeline.kalman is False
    assert handle_key(ord(" "), state, pipeline) is True and state.paused
    assert handle_key(ord("h"), state, pipeline) is True and state.heatmaps
    assert handle_key(255, state, pipeline) is False  # waitKey's "no key"
    assert handle_key(ord("q"), state, pipeline) is False and state.quit
    state = ViewState()
    handle_key(27, state, pipeline)
    assert state.quit


@pytest.mark.parametrize("size", [(1, 1), (16, 12), (12, 400)])
def test_tiny_and_odd_frames_do_not_crash(size):
    width, height = size
    frame = frame_of(width, height)
    person = figure_person(1, (width / 2, 0), 3)
    person.raw_keypoints[:5] = np.nan
    person.box = np.array([-1e12, np.nan, 1e12, 1e12], np.float32)
    result = result_of([person], heatmaps=heatmaps_for([0]))
    for compare in COMPARE_MODES:
        state = ViewState(paused=True, legend=True, heatmaps=True, compare=compare)
        image = view(frame, result, state)
        assert image.dtype == np.uint8 and image.shape[0] >= height and image.shape[1] >= width
