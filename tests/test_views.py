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
# A background no anti-aliased grey text can produce, for finding where the video is drawn.
TINT = (150, 90, 40)

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


def frame_of(width: int, height: int, colour=GREY) -> np.ndarray:
    return np.full((height, width, 3), colour, np.uint8)


def video_rect(image: np.ndarray) -> tuple[int, int, int, int]:
    """(x, y, w, h) of where a TINT frame is drawn in `image`."""
    x1, y1, x2, y2 = bounding_box(is_color(image, TINT))
    return x1, y1, x2 - x1 + 1, y2 - y1 + 1


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


def view(frame, result, state, kalman=True, fps=12.5, threshold=0.3, runs_on="", size=None, banner=""):
    return compose_view(frame, result, state, kalman, fps, threshold, runs_on, size, banner)


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
    # Nothing else in the frame is hidden by the mark: below the HUD (and the label it pushes down,
    # test_box_labels_stay_clear_of_the_hud) the person's pixels are the same.
    x1, y1, x2, y2 = result.people[0].box.astype(int)
    assert (paused[y1 + 70:y2, x1:x2] == playing[y1 + 70:y2, x1:x2]).all()


def test_paused_mark_frames_the_whole_side_by_side_view():
    frame = frame_of(200, 150)
    image = view(frame, result_of([]), ViewState(paused=True, compare="side"), size=(640, 360))
    assert image.shape == (360, 640, 3)
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


def test_side_by_side_is_two_labelled_panes_with_the_frames_aspect():
    width, height = 320, 240
    frame = frame_of(width, height, TINT)
    person = figure_person(2, (200, 70), 22, raw_shift=(-60, 0))  # raw keypoints 60 px to the left
    state = ViewState(compare="side")
    size = (960, 400)
    image = view(frame, result_of([person]), state, size=size)
    assert image.shape == (400, 960, 3)  # exactly the window's size
    panes = []
    for i in range(2):
        x, y, w, h = video_rect(image[:, 480 * i:480 * (i + 1)])
        assert abs(w / h - width / height) <= 0.01 * width / height, (w, h)  # not squashed
        panes.append((x + 480 * i, y, w, h))
    (ax, ay, aw, ah), (bx, by, bw, bh) = panes
    assert (aw, ah, ay) == (bw, bh, by) and 0 < bx - (ax + aw) <= 10  # two equal panes, a small gap
    assert (image[:ay - 30] == 0).all() and (image[ay + ah + 1:] == 0).all()  # black above and below
    strip = ay - bounding_box(~(image == 0).all(axis=-1))[1]
    assert 8 <= strip <= 40
    scale = ah / height
    for name in ("left_ankle", "right_knee"):
        side = SIDE_COLORS["left" if name.startswith("left") else "right"]
        for pane_x, pane, other in ((ax, person.raw_keypoints, person.smoothed_keypoints),
                                    (bx, person.smoothed_keypoints, person.raw_keypoints)):
            x, y = np.round((pane[J[name]] + 0.5) * scale - 0.5).astype(int)
            ox, oy = np.round((other[J[name]] + 0.5) * scale - 0.5).astype(int)
            assert tuple(image[ay + y, pane_x + x]) == side
            assert tuple(image[ay + oy, pane_x + ox]) == TINT
    # Each pane has its title above it, centred, at the window's text size.
    style = style_for((400, 960))
    for pane_x, title in ((ax, "raw"), (bx, "smoothed (Kalman)")):
        cols = np.flatnonzero((image[ay - strip:ay, pane_x:pane_x + aw] >= 200).all(axis=-1).any(axis=0))
        expected = cv2.getTextSize(title, draw.FONT, style.scale, style.thickness)[0][0]
        assert abs((cols.max() - cols.min() + 1) - expected) <= 6, title  # getTextSize counts side bearings
        assert abs((cols.max() + cols.min()) / 2 - aw / 2) <= 4
    # The active smoother names the right pane.
    offline = view(frame, result_of([person]), ViewState(compare="side", smoothing="offline"), size=size)
    cols = np.flatnonzero((offline[ay - strip:ay, bx:bx + bw] >= 200).all(axis=-1).any(axis=0))
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


def test_compose_view_leaves_the_frame_alone_and_render_is_compose_view():
    frame = frame_of(320, 240)
    result = result_of([figure_person(1, (160, 60), 25)], heatmaps=heatmaps_for([0]))
    state = ViewState(heatmaps=True, legend=True, paused=True)
    composed = compose_view(frame, result, state, True, 9.0, 0.3, "cpu")
    assert (frame == GREY).all()
    assert (render(frame, result, state, True, 9.0, 0.3, "cpu") == composed).all()
    # At the frame's own size, with no HUD over the person, the picture is what --output records.
    plain = compose_view(frame, result_of([figure_person(1, (160, 150), 25)]), ViewState(), True, 9.0, 0.3)
    recorded = annotate(frame, result_of([figure_person(1, (160, 150), 25)]), ViewState(), True, 0.3)
    assert (plain[130:] == recorded[130:]).all()


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
    frame = frame_of(640, 480, TINT)
    giant = figure_person(5, (320, 60), 85)
    giant.box = np.array([5, 5, 635, 475], np.float32)
    result = result_of([giant], heatmaps=heatmaps_for([0]))
    size = (1280, 480)  # a window with room beside the video
    off = view(frame, result, ViewState(), size=size)
    on = view(frame, result, ViewState(heatmaps=True), size=size)
    assert on.shape == off.shape == (480, 1280, 3)
    x, _, w, h = video_rect(off)
    assert (x, w, h) == (320, 640, 480)  # the whole height: the video at its own size, centred
    moved_x, _, moved_w, moved_h = video_rect(on)
    assert (moved_w, moved_h) == (640, 480) and moved_x < x  # moved left, as large
    panel = changed(on, np.zeros_like(on))[:, moved_x + moved_w:]
    assert panel.sum() > 150 * 300  # the panel is beside it, on the right
    assert is_color(on, draw.track_color(5)).sum() - is_color(off, draw.track_color(5)).sum() > 1000
    # In the frame's own size there is no room beside: the video narrows, keeping its aspect.
    small = view(frame, result, ViewState(heatmaps=True))
    assert small.shape == (480, 640, 3)
    _, _, w, h = video_rect(small)
    assert w < 600 and abs(w / h - 640 / 480) <= 0.01 * 640 / 480


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


# --- the aspect ratio and the text size at the window's size (issue 20) ---------------------------

GREEN = (0, 255, 0)  # the marker frame's border: no palette, HUD or viridis colour
RED = (0, 0, 255)  # its centre disc


def marker_frame(width: int, height: int) -> np.ndarray:
    """A TINT frame with a green border (1/100 of the height) and a red disc (radius height/10) in
    the middle: in what is drawn, the border's extent is the video's, the disc's its aspect."""
    frame = frame_of(width, height, TINT)
    t = max(2, height // 100)
    frame[:t], frame[-t:], frame[:, :t], frame[:, -t:] = GREEN, GREEN, GREEN, GREEN
    cv2.circle(frame, (width // 2, height // 2), height // 10, RED, -1)
    return frame


def near(image: np.ndarray, colour, tolerance: int = 60) -> np.ndarray:
    return (np.abs(image.astype(int) - np.asarray(colour)).max(axis=-1) < tolerance)


def drawn_aspects(image: np.ndarray, paused: bool = False) -> list[tuple[float, float]]:
    """[(width / height of the green border's extent, of the red disc's)] for each pane, left to right:
    panes are told apart by the columns with no green in them. paused: the yellow frame is drawn over
    the window's edges, and so over the video's where it touches them: count it as the video."""
    green = near(image, GREEN)
    if paused:
        edge = np.zeros_like(green)
        t = style_for(image.shape).border
        edge[:t], edge[-t:], edge[:, :t], edge[:, -t:] = True, True, True, True
        green |= edge & (np.roll(green, t, 0) | np.roll(green, -t, 0) | np.roll(green, t, 1) | np.roll(green, -t, 1))
    columns = green.any(axis=0)
    starts = np.flatnonzero(np.diff(np.concatenate([[0], columns.astype(int)])) == 1)
    ends = np.flatnonzero(np.diff(np.concatenate([columns.astype(int), [0]])) == -1)
    aspects = []
    for x1, x2 in zip(starts, ends):
        if x2 - x1 < 20:
            continue  # the ring of a heatmap peak, not a video
        _, y1, _, y2 = bounding_box(green[:, x1:x2 + 1])
        disc = near(image[:, x1:x2 + 1], RED)
        dx1, dy1, dx2, dy2 = bounding_box(disc)
        aspects.append(((x2 - x1 + 1) / (y2 - y1 + 1), (dx2 - dx1 + 1) / (dy2 - dy1 + 1)))
    return aspects


def someone_at_the_left(width: int, height: int, fills_the_frame: bool = False) -> Person:
    """A person in the left quarter, clear of the disc; with `fills_the_frame` their box covers it all,
    so the heatmap panel finds no free corner and goes beside the video."""
    person = figure_person(1, (width * 0.15, height * 0.2), height / 8)
    if fills_the_frame:
        person.box = np.array([width * 0.05, height * 0.05, width * 0.95, height * 0.95], np.float32)
    return person


VIEWS = {
    "plain": dict(state=ViewState()),
    "heatmaps in a corner": dict(state=ViewState(heatmaps=True)),
    "heatmaps beside": dict(state=ViewState(heatmaps=True), fills=True),
    "side by side": dict(state=ViewState(compare="side"), panes=2),
    "overlay": dict(state=ViewState(compare="overlay")),
    "paused": dict(state=ViewState(paused=True)),
}


@pytest.mark.parametrize("source", [(640, 360), (1920, 1080), (518, 496)])
@pytest.mark.parametrize("name", list(VIEWS))
def test_every_view_keeps_the_videos_aspect_ratio_in_a_1280x720_window(source, name):
    width, height = source
    case = VIEWS[name]
    frame = marker_frame(width, height)
    person = someone_at_the_left(width, height, case.get("fills", False))
    result = result_of([person], heatmaps=heatmaps_for([0]))
    image = view(frame, result, case["state"], size=(1280, 720))
    assert image.shape == (720, 1280, 3)
    aspects = drawn_aspects(image, paused=case["state"].paused)
    assert len(aspects) == case.get("panes", 1), aspects
    for video, disc in aspects:
        assert abs(video / (width / height) - 1) <= 0.01, (name, video, width / height)
        assert abs(disc - 1) <= 0.01, (name, disc)
    if name.startswith("heatmaps"):  # the panel is there, titled in the person's colour
        assert is_color(image, draw.track_color(1)).sum() > 1000


def test_a_resized_window_gets_the_same_picture_letterboxed():
    frame = marker_frame(640, 360)
    for size in ((1280, 720), (700, 720), (1280, 300), (600, 900)):
        image = view(frame, result_of([]), ViewState(), size=size)
        assert image.shape == (size[1], size[0], 3)
        [(video, disc)] = drawn_aspects(image)
        disc_size = min(size[0] / 640, size[1] / 360) * 72  # px: within 1% or, when small, a pixel
        assert abs(video / (640 / 360) - 1) <= 0.01 and abs(disc - 1) <= max(0.01, 1.5 / disc_size), size


def test_text_is_drawn_at_the_windows_size_not_the_sources():
    """The same window shows the same HUD for a 640x360 and a 1920x1080 video (the text is drawn
    after scaling), and the side-by-side panes do not shrink or squeeze it."""
    small = view(frame_of(640, 360, TINT), result_of([]), ViewState(), size=(1280, 720))
    large = view(frame_of(1920, 1080, TINT), result_of([]), ViewState(), size=(1280, 720))
    assert (small == large).all()

    def first_line_height(image):
        rows = np.flatnonzero((image >= 250).all(axis=-1).any(axis=1))
        return int(np.argmax(np.diff(rows) > 1)) + 1  # rows of the first band of white text

    side = view(frame_of(640, 360, TINT), result_of([]), ViewState(compare="side"), size=(1280, 720))
    hud_top = int(np.flatnonzero(~(side == 0).all(axis=-1).all(axis=1))[0])
    assert first_line_height(small) >= 12  # at 720 px, capitals of 12 px and more
    assert first_line_height(side[hud_top:]) == first_line_height(small)  # the pane titles: same size


def test_box_labels_stay_clear_of_the_hud():
    frame = frame_of(640, 480)
    nobody = view(frame, result_of([]), ViewState())
    _, _, hud_right, hud_bottom = bounding_box(changed(nobody, frame))
    person = figure_person(6, (150, 40), 30)  # the box's top, and so its label, under the HUD
    image = view(frame, result_of([person]), ViewState())
    label = is_color(image, draw.track_color(6))
    label[:, int(person.box[2]) - 3:] = False  # the box outline's right side
    label[int(person.box[3]) - 4:] = False  # and its bottom
    rows = np.flatnonzero(label[:, int(person.box[0]) + 4:int(person.box[0]) + 20].sum(axis=1) >= 10)
    assert len(rows) >= 8  # the label's filled rectangle ...
    assert rows.min() > hud_bottom  # ... below the HUD, whole


def test_banner_and_smoothing_line():
    from app.views import BANNER_COLOR, _blocks, style_for as style_of

    frame = frame_of(640, 480)
    plain = view(frame, result_of([]), ViewState())
    noted = view(frame, result_of([]), ViewState(), banner="smoothing... 3/8 frames")
    extra = is_color(noted, BANNER_COLOR).sum() - is_color(plain, BANNER_COLOR).sum()
    assert extra >= 30  # the note, in its colour
    _, y1, _, y2 = bounding_box(changed(plain, noted))
    assert y1 < 40  # at the top of the HUD

    def texts(kalman):
        blocks = _blocks(result_of([]), ViewState(smoothing="live Kalman"), kalman, 10.0, "", "", style_of((480, 640)),
                         1.0, 2000)
        return " | ".join(line if isinstance(line, str) else "".join(t for t, _ in line)
                          for lines, *_ in blocks for line in lines)

    assert "smoothing: live Kalman" in texts(True) and "kalman" not in texts(True).replace("Kalman", "")
    assert "smoothing: off" in texts(False) and "live Kalman" not in texts(False)
