"""Property tests (hypothesis): whatever boxes, heatmaps, keypoints or frames the stages are fed, they
return finite numbers of the right shapes and never raise.

Inputs follow the project's conventions (float32 boxes and keypoints in image pixels), so "any finite
value" means any finite float32, up to +-3.4e38; the stage tests check the same stages on the cases
that matter for accuracy. Each test keeps `max_examples` modest: the whole file runs in well under a
minute on 2 CPU cores.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from official_decode import OFFICIAL, nchw

from app.crop import MIN_BOX_SIZE, boxes_to_center_scale, crop_transforms, finite_boxes, warp_crops
from app.decode import DECODE_METHODS, decode_heatmaps
from app.pipeline import PipelineConfig, PosePipeline
from app.pose import PoseConfig, PoseEstimator
from app.offline import FixedLagStage
from app.pipeline import FrameResult, Person
from app.smoothing import MOTION_MODELS, KalmanConfig, KeypointKalman
from app.tracker import REFUSED, IouTracker, TrackerConfig

INPUT = (256, 192)  # model input (H, W)
HEATMAP = (64, 48)
ASPECT = INPUT[1] / INPUT[0]
PADDING = 1.25
K = 17

# No deadline: the first example of a test pays for imports and cv2's first call, and the shared
# CPU makes per-example times noisy; the example counts bound the run time instead.
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any finite float32, with hypothesis' usual bias towards 0, +-1, tiny, denormal and huge values;
# and plain pixel coordinates, so most boxes also look like boxes.
any_finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
HUGE = float(np.float32(1e30))  # "huge" for values that get squared or summed on the way
pixels = st.floats(-2e4, 2e4, width=32)
coordinate = st.one_of(pixels, any_finite)
not_finite = st.sampled_from([np.nan, np.inf, -np.inf])


def box_arrays(elements, max_boxes: int = 6):
    """(N, 4) float32 xyxy boxes, N in 0..max_boxes."""
    return st.integers(0, max_boxes).flatmap(lambda n: hnp.arrays(np.float32, (n, 4), elements=elements))


# --- app.crop ---------------------------------------------------------------------------------

@FAST
@given(boxes=box_arrays(coordinate))
def test_any_finite_box_gets_a_finite_crop_of_the_model_aspect_that_holds_the_box(boxes):
    centers, sizes = boxes_to_center_scale(boxes, aspect_ratio=ASPECT, padding=PADDING)
    assert centers.shape == sizes.shape == (len(boxes), 2)
    assert np.isfinite(centers).all() and np.isfinite(sizes).all()
    assert np.all(sizes >= MIN_BOX_SIZE * PADDING)
    np.testing.assert_allclose(sizes[:, 0] / sizes[:, 1], ASPECT, rtol=1e-12)
    box = boxes.astype(np.float64)
    np.testing.assert_allclose(centers, (box[:, :2] + box[:, 2:]) / 2, rtol=1e-12)
    # The crop holds the padded box: neither side is ever shrunk.
    sides = np.maximum(box[:, 2:] - box[:, :2], MIN_BOX_SIZE)
    assert np.all(sizes >= PADDING * sides * (1 - 1e-12))
    forward, inverse = crop_transforms(centers, sizes, INPUT)
    assert np.isfinite(forward).all() and np.isfinite(inverse).all()


def affine64(matrices: np.ndarray, points: np.ndarray) -> np.ndarray:
    """matrices (N, 2, 3) applied to points (N, P, 2), in float64 (transform_points returns float32)."""
    return np.einsum("nij,npj->npi", matrices[:, :, :2], points) + matrices[:, None, :, 2]


@FAST
@given(boxes=box_arrays(st.floats(-1e6, 1e6, width=32)), output=st.sampled_from([INPUT, HEATMAP]))
def test_forward_and_inverse_affines_compose_to_identity_on_the_crop(boxes, output):
    # Boxes up to 1e6 px away, a hundred 8K frames off: beyond that float64 itself cannot hold a
    # 1-px box's affine to a thousandth of a pixel (the translation is scale x centre).
    centers, sizes = boxes_to_center_scale(boxes, aspect_ratio=ASPECT, padding=PADDING)
    forward, inverse = crop_transforms(centers, sizes, output)
    h, w = output
    grid = np.stack(np.meshgrid(np.linspace(0, w, 5), np.linspace(0, h, 7)), axis=-1).reshape(1, -1, 2)
    points = np.repeat(grid, len(boxes), axis=0)  # crop pixels: corners, edges and inside
    back = affine64(forward, affine64(inverse, points))
    assert np.abs(back - points).max(initial=0.0) <= 1e-3
    # The box centre is the crop centre, and a proper box lies inside the crop with the padding's margin.
    np.testing.assert_allclose(affine64(forward, centers[:, None, :])[:, 0], np.tile([w / 2, h / 2], (len(boxes), 1)),
                               atol=1e-3)
    proper = np.all(boxes[:, 2:] >= boxes[:, :2], axis=1)
    corners = affine64(forward[proper], boxes[proper].astype(np.float64).reshape(-1, 2, 2))
    margin = (1 - 1 / PADDING) / 2  # the box spans at most the middle 80% of either side
    assert np.all(corners >= np.array([w, h]) * margin - 1e-3)
    assert np.all(corners <= np.array([w, h]) * (1 - margin) + 1e-3)


@FAST
@given(
    boxes=box_arrays(st.one_of(coordinate, not_finite), max_boxes=4),
    frame_size=st.tuples(st.integers(1, 80), st.integers(1, 80)),
    fill=st.integers(1, 255),
)
def test_warp_crops_never_raises_on_any_box_and_frame_down_to_one_pixel(boxes, frame_size, fill):
    frame = np.full((*frame_size, 3), fill, np.uint8)
    finite = finite_boxes(boxes)
    np.testing.assert_array_equal(finite, np.isfinite(boxes).all(axis=1))
    centers, sizes = boxes_to_center_scale(boxes, aspect_ratio=ASPECT, padding=PADDING)
    assert np.isfinite(centers).all() and np.isfinite(sizes).all()  # placeholders for the flagged rows
    forward, _ = crop_transforms(centers, sizes, INPUT)
    crops = warp_crops(frame, forward, INPUT)
    assert crops.shape == (len(boxes), *INPUT, 3) and crops.dtype == np.uint8
    # Bilinear sampling of a flat frame with a black border: nothing brighter than the frame.
    assert crops.max(initial=0) <= fill


# --- app.decode -------------------------------------------------------------------------------

HEATMAP_KINDS = ("normal", "uniform", "sparse", "zeros", "constant")


def make_heatmaps(kind: str, seed: int, scale: float, sign: float, shape: tuple[int, ...]) -> np.ndarray:
    """One heatmap batch from a recipe, so a 64 x 48 map costs hypothesis one seed, not 3072 floats."""
    rng = np.random.default_rng(seed)
    if kind == "normal":  # noise around zero, what an untrained or unsure network gives
        values = rng.standard_normal(shape)
    elif kind == "uniform":
        values = rng.random(shape)
    elif kind == "sparse":  # a few spikes on zero
        values = rng.random(shape) ** 40
    elif kind == "zeros":
        values = np.zeros(shape)
    else:
        values = np.ones(shape)
    return (values * scale * sign).astype(np.float32)


heatmap_recipes = st.tuples(
    st.sampled_from(HEATMAP_KINDS),
    st.integers(0, 2**32 - 1),
    st.sampled_from([1e-45, 1e-40, 1e-20, 1e-3, 1.0, 1e10, 1e30]),  # denormal to huge
    st.sampled_from([1.0, -1.0]),
    st.tuples(st.integers(1, 3), st.sampled_from([HEATMAP, (32, 24), (7, 5), (1, 1)]), st.integers(1, 4)),
)


def decode(heatmaps: np.ndarray, method: str):
    """decode_heatmaps; "dark-udp": "dark" for a model trained with UDP."""
    return decode_heatmaps(heatmaps, method.removesuffix("-udp"), udp=method.endswith("-udp"))


def check_decoded(heatmaps: np.ndarray, method: str) -> None:
    n, h, w, k = heatmaps.shape
    coords, scores = decode(heatmaps, method)
    assert coords.shape == (n, k, 2) and scores.shape == (n, k)
    assert np.isfinite(coords).all() and np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, heatmaps.max(axis=(1, 2)))  # the raw peak value
    assert np.all(coords[..., 0] >= 0) and np.all(coords[..., 0] <= w - 1), coords[..., 0]
    assert np.all(coords[..., 1] >= 0) and np.all(coords[..., 1] <= h - 1), coords[..., 1]


@pytest.mark.parametrize("method", ["dark", "quarter", "argmax", "dark-udp"])
@FAST
@given(recipe=heatmap_recipes)
@example(recipe=("normal", 1, 1.0, 1.0, (1, HEATMAP, 1)))  # the official DARK step lands at x = 50.8
def test_decoded_keypoints_stay_on_the_heatmap(method, recipe):
    kind, seed, scale, sign, (n, (h, w), k) = recipe
    heatmaps = make_heatmaps(kind, seed, scale, sign, (n, h, w, k))
    # Overflow, invalid operations and divisions by zero must not happen on the way (underflow on
    # denormal maps is expected and harmless).
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        check_decoded(heatmaps, method)
    # UDP's whole-map blur lays the maps side by side: on a map width no model makes (not a multiple
    # of 8) cv2 rounds some of its pixels in another loop than the reference's per-map call, and
    # UDP's one-pixel stencil on noise can turn that last bit into 1e-5 px (measured 2.5e-5 on 7 x 5).
    model_size = h % 8 == 0 and w % 8 == 0
    if method in OFFICIAL and (model_size or method != "dark-udp"):
        # And they are the official decoder's, clipped to the map (DARK steps that run off it are
        # clipped, not refused), wherever the official one gives a number: on denormal maps that
        # blur to 0 it divides by 0 and returns NaN, where app.decode keeps the argmax.
        coords, _ = decode(heatmaps, method)
        with np.errstate(all="ignore"):
            expected, _ = OFFICIAL[method](nchw(heatmaps))
        finite = np.isfinite(expected).all(axis=-1)
        assert np.abs(coords - expected)[finite].max(initial=0.0) <= 1e-5


@pytest.mark.parametrize("method", ["dark", "quarter", "argmax"])
@FAST
@given(heatmaps=hnp.arrays(np.float32, st.tuples(st.integers(1, 2), st.integers(1, 9), st.integers(1, 9),
                                                  st.integers(1, 3)),
                           elements=st.floats(-HUGE, HUGE, width=32)))
def test_small_maps_of_arbitrary_values_decode_on_the_map(method, heatmaps):
    # Every value drawn by hypothesis, so a failure shrinks to the smallest map that shows it.
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        check_decoded(heatmaps, method)


# --- app.smoothing ----------------------------------------------------------------------------

keypoint_values = st.one_of(st.floats(-5e3, 5e3), st.floats(-1e30, 1e30), not_finite)
score_values = st.one_of(st.floats(0, 1), st.just(np.nan))


@st.composite
def keypoint_sequences(draw):
    """(T, J, 2) keypoints with wild values and jumps, (T, J) scores, T scales (None, NaN, <= 0, any)."""
    joints = draw(st.sampled_from([1, 3, K]))
    frames = draw(st.integers(1, 12))
    keypoints = draw(hnp.arrays(np.float64, (frames, joints, 2), elements=keypoint_values))
    scores = draw(hnp.arrays(np.float64, (frames, joints), elements=score_values))
    scales = draw(st.lists(st.one_of(st.none(), st.floats(1, 1e4), st.sampled_from([0.0, -5.0, np.nan, np.inf])),
                           min_size=frames, max_size=frames))
    return keypoints, scores, scales


@FAST
@given(sequence=keypoint_sequences(), motion_model=st.sampled_from(sorted(MOTION_MODELS)),
       max_predict=st.integers(0, 3))
def test_kalman_output_is_always_finite_and_unmeasured_joints_are_never_shown(sequence, motion_model, max_predict):
    keypoints, scores, scales = sequence
    config = KalmanConfig(motion_model=motion_model, max_predict=max_predict)
    kalman = KeypointKalman(config)
    ever_measured = np.zeros(keypoints.shape[1], bool)
    for frame, frame_scores, scale in zip(keypoints, scores, scales):
        smoothed, visible = kalman.update(frame, frame_scores, scale=scale)
        assert smoothed.shape == frame.shape and smoothed.dtype == np.float32
        assert visible.shape == frame_scores.shape and visible.dtype == bool
        assert np.isfinite(smoothed).all()
        with np.errstate(invalid="ignore"):  # NaN scores compare False: not measured
            ever_measured |= np.isfinite(frame).all(axis=1) & (frame_scores >= config.score_threshold)
        assert not visible[~ever_measured].any()


@FAST
@given(sequence=keypoint_sequences(), ids=st.lists(st.integers(0, 3), min_size=12, max_size=12),
       lag=st.integers(1, 4), box_size=st.one_of(st.floats(0, 1e4), not_finite))
def test_offline_stage_gives_every_frame_back_once_finite_whatever_the_keypoints(sequence, ids, lag, box_size):
    keypoints, scores, _ = sequence
    stage = FixedLagStage(25.0, lag=lag)
    out = []
    for t, (frame, frame_scores) in enumerate(zip(keypoints, scores)):
        box = np.array([0.0, 0.0, box_size, box_size], np.float32)
        # an id that comes and goes, sometimes twice in a frame
        people = [Person(track_id=ids[t] // 2, box=box, box_score=0.9, raw_keypoints=frame.astype(np.float32),
                         smoothed_keypoints=np.zeros(frame.shape, np.float32),  # finite, as the pipeline's
                         scores=frame_scores.astype(np.float32),
                         visible=np.zeros(len(frame), bool), kalman=True) for _ in range(ids[t] % 3)]
        with np.errstate(all="ignore"):  # float32 casts of the wildest values
            out += stage.push(t, FrameResult(people=people, detected=True, timings_ms={}))
        assert len(stage) <= lag
    out += stage.flush()
    assert [index for index, _ in out] == list(range(len(keypoints)))
    for index, result in out:
        assert len(result.people) == ids[index] % 3
        for person in result.people:
            assert np.isfinite(person.smoothed_keypoints).all()  # as the live filter: always finite


# --- app.tracker ------------------------------------------------------------------------------

tracker_boxes = st.one_of(
    box_arrays(st.one_of(pixels, not_finite), max_boxes=5),
    # plausible boxes: well formed, near each other, so tracks match across frames
    st.lists(st.tuples(st.floats(0, 300), st.floats(0, 300), st.floats(-5, 120), st.floats(-5, 200)),
             max_size=5).map(lambda rows: np.array([[x, y, x + w, y + h] for x, y, w, h in rows],
                                                   np.float32).reshape(-1, 4)),
)


@FAST
@given(frames=st.lists(tracker_boxes, min_size=1, max_size=10), max_missed=st.integers(0, 3), data=st.data())
def test_tracker_refuses_bad_boxes_and_keeps_ids_unique_and_never_reused(frames, max_missed, data):
    # min_new_score 0: every usable box then gets an id (tests/test_tracker.py covers the threshold).
    tracker = IouTracker(TrackerConfig(max_missed=max_missed, min_new_score=0.0))
    dropped_so_far: set[int] = set()
    largest = 0
    for boxes in frames:
        scores = data.draw(hnp.arrays(np.float64, len(boxes), elements=st.one_of(st.floats(0, 1), st.just(np.nan))))
        before = set(tracker.active_ids())
        ids = tracker.update(boxes, scores)
        assert ids.shape == (len(boxes),) and ids.dtype == np.int64
        usable = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        assert np.all(ids[~usable] == REFUSED)
        assert np.all(ids[usable] >= 1)  # scores are >= 0 (or NaN, read as 0): every usable box is tracked
        given_ids = ids[usable].tolist()
        assert len(set(given_ids)) == len(given_ids)  # one box per track
        active = tracker.active_ids()
        assert len(set(active)) == len(active)
        assert set(given_ids) <= set(active)
        assert not set(active) & dropped_so_far  # a dropped id never comes back
        assert all(track_id > largest for track_id in set(given_ids) - before)  # new ids only increase
        largest = max([largest, *given_ids])
        dropped_so_far |= set(tracker.dropped_ids())


# --- app.pipeline -----------------------------------------------------------------------------

class ScriptedDetector:
    """Returns the next of a list of (boxes, scores), then nothing."""

    def __init__(self, script):
        self.script = list(script)

    def detect(self, frame):
        if not self.script:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        return self.script.pop(0)


class RandomRunner:
    """Cheap stand-in for the network: a Gaussian peak somewhere on each map plus noise, at a random
    height, so some joints are confident (boxes get derived from them) and some are not."""

    input_size = INPUT

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        ys, xs = np.mgrid[0:HEATMAP[0], 0:HEATMAP[1]]
        self.grid = xs[..., None].astype(np.float32), ys[..., None].astype(np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert batch.shape[1:] == (*INPUT, 3) and batch.dtype == np.float32 and np.isfinite(batch).all()
        n = len(batch)
        xs, ys = self.grid
        centre_x = self.rng.uniform(-2, HEATMAP[1] + 1, (n, 1, 1, K)).astype(np.float32)
        centre_y = self.rng.uniform(-2, HEATMAP[0] + 1, (n, 1, 1, K)).astype(np.float32)
        height = self.rng.uniform(-0.2, 1.0, (n, 1, 1, K)).astype(np.float32)
        peaks = height * np.exp(-((xs - centre_x) ** 2 + (ys - centre_y) ** 2) / 8)
        return (peaks + self.rng.normal(0, 0.02, (n, *HEATMAP, K))).astype(np.float32)


# Mostly boxes a detector could give (in or near the frame, some degenerate), some wild ones.
plausible_box = st.tuples(st.floats(-30, 150), st.floats(-30, 150), st.floats(-5, 120), st.floats(-5, 160)).map(
    lambda r: (r[0], r[1], r[0] + r[2], r[1] + r[3]))
wild_box = st.tuples(*[st.one_of(pixels, any_finite, not_finite)] * 4)
detections = st.tuples(
    st.lists(st.one_of(plausible_box, plausible_box, wild_box), max_size=4),
    st.floats(allow_nan=True, allow_infinity=False, width=32),
).map(lambda pair: (np.array(pair[0], np.float32).reshape(-1, 4), np.full(len(pair[0]), pair[1], np.float32)))


@SLOW
@given(
    script=st.lists(detections, min_size=1, max_size=5),
    frame_size=st.tuples(st.integers(1, 120), st.integers(1, 160)),
    frames=st.integers(1, 6),
    detect_every=st.integers(1, 3),
    decode=st.sampled_from(DECODE_METHODS),
    flip=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_pipeline_people_are_finite_or_hidden_whatever_the_detector_says(
        script, frame_size, frames, detect_every, decode, flip, seed):
    estimator = PoseEstimator(RandomRunner(seed), PoseConfig(decode=decode, flip=flip, max_batch=3))
    pipeline = PosePipeline(ScriptedDetector(script), estimator, PipelineConfig(detect_every=detect_every))
    frame = np.random.default_rng(seed).integers(0, 256, (*frame_size, 3), dtype=np.uint8)
    for _ in range(frames):
        result = pipeline.process(frame, want_heatmaps=True)
        assert len(result.heatmaps) >= len(result.people)
        ids = [person.track_id for person in result.people]
        assert len(set(ids)) == len(ids) and all(track_id >= 1 for track_id in ids)
        for person in result.people:
            assert np.isfinite(person.box).all()
            assert person.visible.shape == (K,) and person.visible.dtype == bool
            assert np.isfinite(person.smoothed_keypoints).all()
            assert np.isfinite(person.keypoints).all()  # what is drawn and written (Kalman on)
            raw_finite = np.isfinite(person.raw_keypoints).all(axis=1)
            assert np.all(raw_finite | ~person.visible)
            assert np.isfinite(person.scores).all()
        state = pipeline.state_size()
        assert state["smoothers"] <= state["tracks"]
