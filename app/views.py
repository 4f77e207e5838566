"""What the window shows: the view state a user toggles with keys, and the pictures drawn from it.

`annotate` draws the skeletons and boxes on a copy of the frame, at the frame's size: what
`--output` records. `compose_view` builds what the window shows, at the window's size: the video
fitted inside with its aspect ratio kept (black bars), skeletons drawn after scaling, the HUD
(state, stage times, colour legend), the key legend (?), one person's heatmaps (h), raw against
smoothed (c). `render` is compose_view under the name the benchmarks use.

Sizes (text, lines, margins) follow the size of the picture they are drawn on (`style_for`): the
frame's for `annotate`, the window's for `compose_view`, so the view reads the same on a 320 x 240
camera and on a 1920 x 1080 video, and the same text is never squeezed or shrunk with the video.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from app import draw
from app.pipeline import FrameResult, Person
from app.skeleton import JOINT_LABELS, PALETTE, SIDE_COLORS

# Stage timings in the HUD, always in this order (the pipeline measures them in a different order on
# detection and tracking frames); a stage that did not run this frame shows "-".
STAGES = ("detect", "crop", "model", "decode", "track", "smooth")

# c cycles through these: nothing compared, raw and smoothed side by side, raw drawn over smoothed.
COMPARE_MODES = ("off", "side", "overlay")
COMPARE_NAMES = {"off": "skeleton", "side": "compare side by side", "overlay": "compare overlay"}

# The key legend ? shows: (keys, what they do). Data, so a new key adds one row.
KEY_LEGEND: list[tuple[str, str]] = [
    ("q, Esc", "quit"),
    ("space", "pause / play"),
    ("k", "Kalman smoothing on / off"),
    ("h", "one person's heatmaps"),
    ("Tab, n", "next person's heatmaps"),
    ("c", "compare raw and smoothed: side by side, overlay, off"),
    ("?", "show / hide these keys"),
]

PAUSED_COLOR = PALETTE["yellow"]
BANNER_COLOR = PALETTE["orange"]  # a note on the frame shown, e.g. not smoothed yet
STRIP_COLOR = (40, 40, 40)  # behind the pane titles and a panel placed beside the video
MIN_TEXT_SCALE = 0.3  # OpenCV font scale: 8 px capitals, the smallest HUD text that still reads
MIN_TILE = 36  # px: heatmap tiles narrower than this go beside the video, where there is room


@dataclass
class ViewState:
    """What the user toggled with keys, and what the view needs to remember between frames."""

    paused: bool = False
    heatmaps: bool = False
    compare: str = "off"  # one of COMPARE_MODES
    legend: bool = False  # the key legend
    heatmap_track: int | None = None  # whose heatmaps are shown; None (or gone): the first person
    smoothing: str = ""  # the active smoother's name, e.g. "offline Kalman", for the HUD and pane title
    quit: bool = False
    shown_tracks: tuple[int, ...] = ()  # track ids of the last composed view, for Tab to step through


def handle_key(key: int, state: ViewState, pipeline) -> bool:
    """Keys: q/Esc quit, k Kalman on/off, space pause, h heatmaps, Tab/n next person's heatmaps,
    c compare (off -> side by side -> overlay -> off), ? (or /) key legend.

    Returns whether the key changed what is drawn, so a paused window knows to redraw."""
    if key in (ord("q"), 27):
        state.quit = True
        return False
    if key == ord("k"):
        pipeline.kalman = not pipeline.kalman
    elif key == ord(" "):
        state.paused = not state.paused
    elif key == ord("h"):
        state.heatmaps = not state.heatmaps
    elif key == ord("c"):
        mode = state.compare if state.compare in COMPARE_MODES else "off"
        state.compare = COMPARE_MODES[(COMPARE_MODES.index(mode) + 1) % len(COMPARE_MODES)]
    elif key in (ord("?"), ord("/")):
        state.legend = not state.legend
    elif key in (9, ord("n")):  # 9: Tab
        ids = state.shown_tracks
        if not ids:
            return False
        current = state.heatmap_track if state.heatmap_track in ids else ids[0]
        state.heatmap_track = ids[(ids.index(current) + 1) % len(ids)]
    else:
        return False
    return True


@dataclass(frozen=True)
class Style:
    """Sizes in px (and OpenCV font scales) for a frame of a given size."""

    scale: float  # HUD text
    thickness: int  # HUD text stroke
    margin: int  # between the frame's edge and a block, and between blocks
    limb: int  # skeleton line width
    joint: int  # joint radius
    box: int  # box outline width
    label_scale: float  # box label text
    border: int  # the PAUSED frame


def style_for(shape: tuple[int, ...]) -> Style:
    """Scaled by the frame's short side: text scale 0.4 (11 px capitals) at 240, 0.63 at 720, 0.8
    (21 px) at 1080."""
    short = max(1, min(shape[:2]))
    scale = min(1.5, max(0.35, 0.286 + short / 2100))
    return Style(
        scale=scale, thickness=1 if scale < 0.7 else 2, margin=max(6, short // 60),
        limb=max(2, round(short / 360)), joint=max(3, round(short / 240)), box=max(2, round(short / 480)),
        label_scale=scale * 0.9, border=max(3, short // 160),
    )


def smoothed_scores(person: Person, threshold: float) -> np.ndarray:
    """(K,) scores for drawing the smoothed keypoints: a joint the filter still holds (visible) is
    drawn even when this frame's heatmap peak is weak; one it dropped is not."""
    return np.where(person.visible, np.maximum(person.scores, threshold), 0.0)


def _draw_people(canvas: np.ndarray, people: list[Person], style: Style, threshold: float, which: str,
                 label_scale: float | None = None, avoid=()) -> None:
    """which: "raw", "smoothed" or "overlay" (raw thin over smoothed thick). Box outlines first, then
    every skeleton, then every label (at `label_scale`, default the style's; clear of the `avoid`
    rectangles where the box leaves room): in a crowd no limb covers a label."""
    pose_spec = draw.DrawingSpec(thickness=style.limb, radius=style.joint)
    raw_spec = draw.DrawingSpec(draw.RAW_SPEC.color, thickness=max(1, style.limb // 2), radius=max(2, style.joint - 1))
    smooth_spec = draw.DrawingSpec(draw.SMOOTHED_SPEC.color, thickness=style.limb + 1, radius=style.joint + 1)
    for person in people:
        draw.draw_box(canvas, person.box, person.track_id, thickness=style.box, label=False)
    for person in people:
        if which == "overlay":
            draw.draw_comparison(canvas, person.raw_keypoints, person.smoothed_keypoints, person.scores, threshold,
                                 raw_spec, smooth_spec, smoothed_scores=smoothed_scores(person, threshold))
        elif which == "smoothed":
            draw.draw_pose(canvas, person.smoothed_keypoints, smoothed_scores(person, threshold), threshold, pose_spec)
        else:
            draw.draw_pose(canvas, person.raw_keypoints, person.scores, threshold, pose_spec)
    for person in people:
        draw.draw_box_label(canvas, person.box, person.track_id,
                            font_scale=style.label_scale if label_scale is None else label_scale, avoid=avoid)


def annotate(frame: np.ndarray, result: FrameResult, state: ViewState, kalman: bool, threshold: float) -> np.ndarray:
    """Skeletons (smoothed when `kalman`, else raw) and boxes on a copy of frame (H, W, 3), same size:
    what `--output` records. The view keys (c, h, ?) do not change it, so a recording does not
    change style halfway because a key was pressed; `state` is taken for a uniform signature."""
    canvas = frame.copy()
    _draw_people(canvas, result.people, style_for(frame.shape), threshold, "smoothed" if kalman else "raw")
    return canvas


def _timing_items(timings_ms: dict[str, float]) -> list[str]:
    items = [f"{stage} {timings_ms[stage]:.0f}" if stage in timings_ms else f"{stage} -" for stage in STAGES]
    return ["ms"] + items + [f"{stage} {ms:.0f}" for stage, ms in sorted(timings_ms.items()) if stage not in STAGES]


def _blocks(result: FrameResult, state: ViewState, kalman: bool, fps: float, runs_on: str, heatmap_note: str,
            style: Style, factor: float, max_width: int, paused_line: bool = True, status: bool = True,
            banner: str = "") -> list[tuple[list, float, int, draw.Color | None]]:
    """The HUD's text blocks, top to bottom, wrapped to `max_width`: (lines, scale, thickness, colour).
    For frames too small for everything, paused_line False leaves out the PAUSED line (the yellow
    frame still says it) and status False the state block. banner: a line above the state block,
    in BANNER_COLOR (e.g. "smoothing... 3/8: not smoothed yet")."""
    scale, thickness = style.scale * factor, style.thickness

    def wrap(items: list, s: float = scale, t: int = thickness) -> list:
        return draw.wrap_items(items, max_width - 2 * draw.status_padding(s, t) - 2, s, t)

    blocks = []
    if state.paused and paused_line:
        big = min(scale * 1.6, 2.0)
        blocks.append((wrap(["PAUSED", "space: play"], big, 2), big, 2, PAUSED_COLOR))
    if banner:
        blocks.append((wrap([banner]), scale, thickness, BANNER_COLOR))
    people = len(result.people)
    # One item says what the skeletons show: k switches the smoother off (raw keypoints) and on.
    smoothing = f"smoothing: {state.smoothing or 'Kalman'}" if kalman else "smoothing: off (raw, k: on)"
    state_items = [f"{fps:.1f} FPS", f"{people} {'person' if people == 1 else 'people'}", smoothing]
    if runs_on:
        state_items.append(runs_on)
    view = [f"view: {COMPARE_NAMES.get(state.compare, state.compare)}"]
    if heatmap_note:
        view.append(heatmap_note)
    if not state.legend:
        view.append("? keys")
    if state.compare == "overlay":
        colours = [("raw", draw.RAW_SPEC.color), (f"smoothed ({state.smoothing or 'Kalman'})", draw.SMOOTHED_SPEC.color)]
    else:
        colours = [("left", SIDE_COLORS["left"]), ("right", SIDE_COLORS["right"]), ("centre", SIDE_COLORS["center"])]
    if status:
        lines = wrap(state_items) + wrap(view) + wrap(_timing_items(result.timings_ms)) + wrap(colours)
        blocks.append((lines, scale, thickness, None))
    if state.legend:
        keys = [line for key, action in KEY_LEGEND for line in wrap([f"{key}: {action}"])]
        blocks.append((keys, scale, thickness, None))
    return blocks


def _layout_hud(result, state, kalman, fps, runs_on, heatmap_note, style, origin, width, height, banner=""):
    """Blocks and their top-left corners, shrunk until they fit in width x height px from origin."""
    x0, y0 = origin
    # Smaller text first, down to the smallest that still reads; then without the PAUSED line; then
    # the key legend alone, when it is asked for. Past that the blocks are clipped.
    attempts = []
    factor = 1.0
    while style.scale * factor >= MIN_TEXT_SCALE:
        attempts.append((factor, True, True))
        factor *= 0.9
    factor /= 0.9
    attempts += [(factor, False, True)] + ([(factor, False, False)] if state.legend else [])
    for factor, paused_line, status in attempts:
        blocks = _blocks(result, state, kalman, fps, runs_on, heatmap_note, style, factor, width - 2 * style.margin,
                         paused_line, status, banner)
        sizes = [draw.status_size(lines, scale, thickness) for lines, scale, thickness, _ in blocks]
        total = sum(h for _, h, _ in sizes) + style.margin * (len(blocks) - 1)
        if total <= height - 2 * style.margin:
            break
    placed, y = [], y0 + style.margin
    for block, (w, h, _) in zip(blocks, sizes):
        placed.append((block, (x0 + style.margin, y), (w, h)))
        y += h + style.margin
    return placed


def _overlap(a, b) -> int:
    """Area in px of the intersection of two (x1, y1, x2, y2) rectangles."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return int(max(0, w) * max(0, h))


def _corner_for(area, size, margin, hard, soft):
    """Top-left (x, y) of a panel of size (w, h) in a corner of area (x1, y1, x2, y2) that overlaps
    none of the `hard` rectangles and as little of the `soft` ones as can be; None if every corner
    overlaps a hard one or the panel does not fit."""
    x1, y1, x2, y2 = area
    w, h = size
    if w + 2 * margin > x2 - x1 or h + 2 * margin > y2 - y1:
        return None
    best = None
    for x, y in ((x2 - margin - w, y1 + margin), (x2 - margin - w, y2 - margin - h),
                 (x1 + margin, y2 - margin - h), (x1 + margin, y1 + margin)):
        rect = (x, y, x + w, y + h)
        if any(_overlap(rect, r) for r in hard):
            continue
        cost = sum(_overlap(rect, r) for r in soft)
        if best is None or cost < best[0]:
            best = (cost, (x, y))
    return None if best is None else best[1]


def _grid_tile(heatmap_shape, columns: int, max_w: int, max_h: int, style: Style) -> int:
    """The widest tile (px) with which the heatmap grid fits max_w x max_h; 0 if none does."""
    tile = max_w // columns
    while tile >= 4 and draw.heatmap_grid_size(heatmap_shape, tile, columns, style.scale, style.thickness)[1] > max_h:
        tile -= 1
    return tile if tile >= 4 else 0


def _heatmap_panel(result: FrameResult, state: ViewState) -> tuple[np.ndarray | None, int, str]:
    """(panel or None, index of the person shown, a HUD note)."""
    people = result.people
    if not people:
        return None, -1, "heatmaps: nobody"
    ids = [p.track_id for p in people]
    index = ids.index(state.heatmap_track) if state.heatmap_track in ids else 0
    heatmaps = result.heatmaps
    if heatmaps is None or len(heatmaps) <= index or np.asarray(heatmaps).ndim != 4:
        # The model only returns heatmaps when asked; the frame on screen was computed before h.
        return None, index, "heatmaps: press space" if state.paused else "heatmaps: next frame"
    return np.asarray(heatmaps[index]), index, (f"heatmaps #{ids[index]}" + (", Tab: next" if len(ids) > 1 else ""))


def fit_panes(frame_size: tuple[int, int], area: tuple[int, int, int, int], count: int = 1, gap: int = 0,
              strip: int = 0) -> list[tuple[int, int, int, int]]:
    """Where `count` copies of a (W, H) frame go, side by side `gap` px apart, each under a title strip
    `strip` px high, scaled alike to fit inside area (x, y, w, h) and centred in it: (x, y, w, h)
    of each picture (strip excluded). The frame's aspect ratio is kept (to the rounding of a pixel),
    whatever the area's: the rest of the area stays black."""
    width, height = frame_size
    ax, ay, aw, ah = area
    scale = max(0.0, min((aw - (count - 1) * gap) / (count * width), (ah - strip) / height))
    pane_h = max(1, min(ah, round(height * scale)))
    pane_w = max(1, round(pane_h * width / height))  # from the rounded height: the aspect holds
    while pane_h > 1 and count * pane_w + (count - 1) * gap > aw:  # rounded up past the area: a row less
        pane_h -= 1
        pane_w = max(1, round(pane_h * width / height))
    pane_w = min(pane_w, aw)
    group_w = count * pane_w + (count - 1) * gap
    x0 = ax + max(0, (aw - group_w) // 2)
    y0 = ay + max(0, (ah - strip - pane_h) // 2) + strip
    return [(min(x0 + i * (pane_w + gap), ax + aw - 1), min(y0, ay + ah - 1), pane_w, pane_h) for i in range(count)]


def _scaled_person(person: Person, sx: float, sy: float) -> Person:
    """`person` in a picture scaled by (sx, sy): boxes are edges (x * s), keypoints pixel centres
    ((x + 0.5) * s - 0.5), as cv2.resize maps them."""
    factor = np.array([sx, sy], np.float64)
    box = np.asarray(person.box, np.float64) * np.tile(factor, 2)

    def points(p):
        return ((np.asarray(p, np.float64) + 0.5) * factor - 0.5).astype(np.float32)

    return replace(person, box=box.astype(np.float32), raw_keypoints=points(person.raw_keypoints),
                   smoothed_keypoints=points(person.smoothed_keypoints))


def _scaled_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """frame (H, W, 3) resized to (w, h). Halved with cv2.pyrDown (smoothed, no aliasing) while it is
    more than twice too large, then bilinear: INTER_AREA would do it in one step but costs 10 times
    as much at ratios that are not whole numbers (28 against 3 ms for 1920x1080 into 1280x720,
    benchmarks/view_compose.py)."""
    w, h = size
    if frame.shape[:2] == (h, w):
        return frame
    while frame.shape[1] >= 2 * w and frame.shape[0] >= 2 * h and min(frame.shape[:2]) >= 2:
        frame = cv2.pyrDown(frame)
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)


def _hud_rects(hud, dx: int = 0, dy: int = 0) -> list[tuple[int, int, int, int]]:
    """The HUD's blocks as (x1, y1, x2, y2), moved by (dx, dy) (into a pane's own coordinates)."""
    return [(x + dx, y + dy, x + w + dx, y + h + dy) for _, (x, y), (w, h) in hud]


def compose_view(frame: np.ndarray, result: FrameResult, state: ViewState, kalman: bool, fps: float,
                 threshold: float, runs_on: str = "", size: tuple[int, int] | None = None,
                 banner: str = "") -> np.ndarray:
    """What the window shows, drawn at the size it is shown: the picture (skeletons smoothed when
    `kalman`), or in compare mode the raw and smoothed panes, with the HUD, the key legend and the
    heatmap panel.

    frame (H, W, 3); size: (W, H) of the window's picture area; None: the frame's own size. The
    result is exactly that size: the video (each pane of it) is scaled to fit inside with its
    aspect ratio kept and centred on black, whatever the window's shape and the view; skeletons,
    text and panels are drawn after scaling, at sizes that follow `size` (`style_for`), so a label
    reads the same on a 640x360 and a 1920x1080 video in the same window. The heatmap panel goes
    over a corner of the video that hides neither the HUD nor its person, else beside the video
    (which then gets narrower). Records the people's track ids in `state.shown_tracks` for the Tab
    key. runs_on: where the networks run, e.g. "cuda:0 float16", shown in the HUD when given.
    banner: a note above the HUD's state lines (the demo's "smoothing..." while the offline
    smoother fills)."""
    height, width = frame.shape[:2]
    out_w, out_h = (max(1, int(v)) for v in (size or (width, height)))
    style = style_for((out_h, out_w))
    people = result.people
    state.shown_tracks = tuple(int(p.track_id) for p in people)
    side = state.compare == "side"
    count = 2 if side else 1
    (_, text_h), baseline = draw.text_size("Ag", style.scale, style.thickness)
    strip = text_h + baseline + style.margin if side else 0
    gap = max(2, style.margin // 2) if side else 0

    panel, index, note = _heatmap_panel(result, state) if state.heatmaps else (None, -1, "")

    def layout(area):
        panes = fit_panes((width, height), area, count, gap, strip)
        x, y, w, h = panes[0]
        hud = _layout_hud(result, state, kalman, fps, runs_on, note, style, (x, y), w, h, banner)
        bar = y - strip - area[1]  # black above the panes (side by side in a window of the video's shape)
        if bar > 2 * style.margin:
            # The HUD goes there, over no video, when all of it fits at full size.
            group_w = panes[-1][0] + panes[-1][2] - x
            above = _layout_hud(result, state, kalman, fps, runs_on, note, style, (x, area[1]), group_w, bar, banner)
            fits = above and above[-1][1][1] + above[-1][2][1] <= area[1] + bar - style.margin
            if fits and len(above) == len(hud) and above[-1][0][1] == style.scale:
                hud = above
        return panes, hud

    panes, hud = layout((0, 0, out_w, out_h))
    grid, spot, column = None, None, None
    if panel is not None:
        columns = 6 if width >= height else 3
        title = f"#{people[index].track_id} heatmaps"
        colour = draw.track_color(people[index].track_id)
        pane_w, pane_h = panes[0][2:]
        group = (panes[0][0], panes[0][1], panes[-1][0] + pane_w, panes[0][1] + pane_h)
        tile = _grid_tile(panel.shape, columns, int((group[2] - group[0]) * 0.45), int(pane_h * 0.5), style)
        if tile >= MIN_TILE:
            hard, soft = _hud_rects(hud), []
            for i, person in enumerate(people):
                box = np.nan_to_num(np.asarray(person.box, np.float64), nan=0.0, posinf=1e6, neginf=-1e6)
                box = box * np.array([pane_w / width, pane_h / height] * 2)
                for px, py, _, _ in panes:
                    rect = (px + box[0] - style.margin, py + box[1] - style.margin,
                            px + box[2] + style.margin, py + box[3] + style.margin)
                    (hard if i == index else soft).append(rect)
            grid = draw.heatmap_grid(panel, tile, columns, JOINT_LABELS, title, colour, style.scale, style.thickness)
            spot = _corner_for(group, grid.shape[1::-1], style.margin, hard, soft)
        if spot is None:
            # No corner leaves the person in view (or the video is too small for readable tiles):
            # a column beside the video, where it hides nothing; the video narrows to make room.
            columns = 3
            tile = _grid_tile(panel.shape, columns, int(out_w * 0.4) - 2 * style.margin, out_h - 2 * style.margin,
                              style)
            grid = draw.heatmap_grid(panel, max(tile, 4), columns, JOINT_LABELS, title, colour, style.scale,
                                     style.thickness)
            column_w = min(out_w, grid.shape[1] + 2 * style.margin)
            panes, hud = layout((0, 0, max(1, out_w - column_w), out_h))
            # The video and the column together, centred.
            right = panes[-1][0] + panes[-1][2]
            shift = max(0, (out_w - (right - panes[0][0] + column_w)) // 2 - panes[0][0])
            panes = [(x + shift, y, w, h) for x, y, w, h in panes]
            hud = [(block, (x + shift, y), wh) for block, (x, y), wh in hud]
            column = (min(right + shift, out_w - column_w), column_w)

    covered = count == 1 and column is None and panes[0] == (0, 0, out_w, out_h)
    canvas = np.empty((out_h, out_w, 3), np.uint8) if covered else np.zeros((out_h, out_w, 3), np.uint8)
    titles = ("raw", f"smoothed ({state.smoothing or 'Kalman'})")
    modes = ("raw", "smoothed") if side else ("overlay",) if state.compare == "overlay" else (
        "smoothed" if kalman else "raw",)
    scaled = None
    for (x, y, w, h), which, title in zip(panes, modes, titles):
        w, h = min(w, out_w - x), min(h, out_h - y)
        pane = canvas[y:y + h, x:x + w]  # a view: drawn on in place, clipped to the pane
        if scaled is None or scaled.shape[:2] != (h, w):
            scaled = _scaled_frame(frame, (w, h))  # once for both panes of side by side
        pane[:] = scaled
        shown = [_scaled_person(p, w / width, h / height) for p in people]
        _draw_people(pane, shown, style_for((h, w)), threshold, which, label_scale=style.label_scale,
                     avoid=_hud_rects(hud, -x, -y))
        if side:
            canvas[max(0, y - strip):y, x:x + w] = STRIP_COLOR
            title_w = draw.text_size(title, style.scale, style.thickness)[0][0]
            cv2.putText(canvas, title, (x + max(2, (w - title_w) // 2), y - strip + (strip + text_h) // 2), draw.FONT,
                        style.scale, draw.TEXT_COLOR, style.thickness, cv2.LINE_AA)

    if grid is not None and spot is not None:
        x, y = spot
        canvas[y:y + grid.shape[0], x:x + grid.shape[1]] = grid[:out_h - y, :out_w - x]
    elif grid is not None and column is not None:
        x, column_w = column
        top = max(0, min(panes[0][1] - strip, out_h - grid.shape[0] - 2 * style.margin))
        bottom = min(out_h, max(panes[0][1] + panes[0][3], top + grid.shape[0] + 2 * style.margin))
        canvas[top:bottom, x:x + column_w] = STRIP_COLOR
        gy, gx = top + style.margin, x + style.margin
        piece = grid[:max(0, out_h - gy), :max(0, out_w - gx)]
        canvas[gy:gy + piece.shape[0], gx:gx + piece.shape[1]] = piece

    for (lines, scale, thickness, colour), origin, _ in hud:
        draw.draw_status(canvas, lines, origin, scale, thickness, colors=[colour] * len(lines) if colour else None)
    if state.paused:
        t = style.border
        for region in (canvas[:t], canvas[-t:], canvas[:, :t], canvas[:, -t:]):
            region[:] = PAUSED_COLOR
    return canvas


def render(frame: np.ndarray, result: FrameResult, state: ViewState, kalman: bool, fps: float,
           threshold: float, runs_on: str = "", size: tuple[int, int] | None = None) -> np.ndarray:
    """What the window shows, in one call (compose_view); kept for the benchmarks' and tests' callers."""
    return compose_view(frame, result, state, kalman, fps, threshold, runs_on, size)
