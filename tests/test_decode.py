"""Heatmap decoding against per-joint transcriptions of the official decoders, and on Gaussians of
known centre (sigma 2, peak 1, as the official targets)."""

import numpy as np
import pytest
from official_decode import OFFICIAL, nchw, official_dark, official_flip_average
from oracle import render_gaussians

from app.decode import _STENCIL_POINTS, _blurred_stencil, _local_dark, argmax_heatmaps, decode_heatmaps, flip_back
from app.skeleton import flip_index

H, W, K = 64, 48, 17
# heatmap px: "equal" to the official decoder. Measured: quarter 0.0 (bit for bit); dark at most
# 3.8e-6, one float32 step of a coordinate between 32 and 64 (its local path computes the Taylor step
# in float64 without the reference's rescale, app.decode._local_dark; the product asks for 1e-4);
# dark-udp 0.0 (bit for bit) on every heatmap size a model gives (multiples of 8).
EXACT = 1e-5


def assert_official(heatmaps, method):
    """decode_heatmaps (NHWC) equals the official decoder (NCHW) on the same float32 heatmaps.
    method: "quarter", "dark", or "dark-udp" (decode_heatmaps(..., "dark", udp=True))."""
    coords, scores = decode_heatmaps(heatmaps, method.removesuffix("-udp"), udp=method.endswith("-udp"))
    if method == "quarter":
        expected, maxvals = OFFICIAL[method](nchw(heatmaps))
    else:  # the configs' modulate_kernel: 11 for 256x192 (64 x 48 maps), 17 for 384x288 (96 x 72)
        expected, maxvals = OFFICIAL[method](nchw(heatmaps), kernel={96: 17}.get(heatmaps.shape[1], 11))
    assert np.isfinite(expected).all()
    np.testing.assert_array_equal(scores, maxvals[..., 0])
    difference = np.abs(coords.astype(np.float64) - expected)
    worst = np.unravel_index(difference.argmax(), difference.shape)
    assert difference.max() <= EXACT, (difference.max(), worst, coords[worst[:2]], expected[worst[:2]])
    return coords, expected


# --- heatmaps that exercise every rule -------------------------------------------------------------

def gaussians(centres, heights, sigma=2.0):
    """(N, K, 2) centres, (N, K) peak heights -> (N, H, W, K) float32."""
    return render_gaussians(centres, np.ones(centres.shape[:2], bool), sigma=sigma) * \
        np.asarray(heights, np.float32)[:, None, None, :]


def border_centres(rng, n):
    """Centres on and next to every border row and column (0, 1, 2, W-3, W-2, W-1 and the same in y),
    on either axis or both, with sub-pixel jitter so the neighbours differ."""
    edges_x = np.array([0, 1, 2, 3, W - 4, W - 3, W - 2, W - 1], np.float64)
    edges_y = np.array([0, 1, 2, 3, H - 4, H - 3, H - 2, H - 1], np.float64)
    x = rng.uniform(0, W - 1, (n, K))
    y = rng.uniform(0, H - 1, (n, K))
    which = rng.integers(0, 3, (n, K))  # 0: x on an edge, 1: y, 2: both
    jitter = lambda: rng.uniform(-0.45, 0.45, (n, K))  # noqa: E731
    x = np.where(which != 1, rng.choice(edges_x, (n, K)) + jitter(), x)
    y = np.where(which != 0, rng.choice(edges_y, (n, K)) + jitter(), y)
    return np.stack([x, y], axis=-1)


def heatmap_cases():
    rng = np.random.default_rng(11)
    n = 12
    anywhere = np.stack([rng.uniform(-1, W, (n, K)), rng.uniform(-1, H, (n, K))], axis=-1)
    border = border_centres(rng, n)
    ones = np.ones((n, K))
    weak_heights = rng.uniform(0.1, 0.3, (n, K))
    noise = lambda std: rng.normal(0, std, (n, H, W, K)).astype(np.float32)  # noqa: E731
    cases = {
        "clean anywhere": gaussians(anywhere, ones),
        "clean on the borders": gaussians(border, ones),
        "weak + noise 0.03": gaussians(anywhere, weak_heights) + noise(0.03),
        "weak on the borders + noise 0.03": gaussians(border, weak_heights) + noise(0.03),
        "noisy 0.1": gaussians(anywhere, ones) + noise(0.1),
        "noise only": noise(1.0),
        "two peaks": gaussians(anywhere, ones) + gaussians(border, 0.9 * ones),
    }
    # Exact integer peaks on x = 1 / y = 1 and the other border rows: equal neighbours on one axis.
    ints = np.stack([rng.integers(0, W, (n, K)), rng.integers(0, H, (n, K))], axis=-1).astype(np.float64)
    ints[:, ::2, 0] = rng.choice([0, 1, 2, W - 3, W - 2, W - 1], (n, (K + 1) // 2))
    ints[:, 1::2, 1] = rng.choice([0, 1, 2, H - 3, H - 2, H - 1], (n, K // 2))
    cases["integer peaks on the borders"] = gaussians(ints, ones)
    # Flat, empty, negative and plateau maps: ties go to the first pixel, as np.argmax.
    flat = np.zeros((4, H, W, K), np.float32)
    flat[1] = 0.5
    flat[2] = -1.0
    flat[3, 20:30, 10:25] = 0.7  # a plateau: argmax on its first pixel, inside the map
    cases["flat, empty, negative, plateau"] = flat
    # Anything a network might give: widths, heights and noise drawn at random, anywhere on the map.
    sigma = rng.uniform(1.0, 4.0, (n, 1, 1, K))
    centres = np.stack([rng.uniform(-2, W + 1, (n, K)), rng.uniform(-2, H + 1, (n, K))], axis=-1)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    d2 = (xs[None, :, :, None] - centres[:, None, None, :, 0]) ** 2 + \
        (ys[None, :, :, None] - centres[:, None, None, :, 1]) ** 2
    cases["random widths, heights, noise"] = (np.exp(-d2 / (2 * sigma ** 2)) * rng.uniform(0.02, 1.0, (n, 1, 1, K))
                                              + noise(1.0) * rng.uniform(0, 0.1, (n, 1, 1, K)))
    return {name: np.ascontiguousarray(maps, np.float32) for name, maps in cases.items()}


CASES = heatmap_cases()


@pytest.mark.parametrize("method", ["quarter", "dark", "dark-udp"])
@pytest.mark.parametrize("case", list(CASES))
def test_decoding_equals_the_official_decoder(method, case):
    assert_official(CASES[case], method)


@pytest.mark.parametrize("method", ["quarter", "dark", "dark-udp"])
@pytest.mark.parametrize("case", ["clean on the borders", "weak on the borders + noise 0.03", "noisy 0.1"])
def test_flip_test_equals_the_official_flip_then_decode(method, case):
    heatmaps = CASES[case]
    rng = np.random.default_rng(5)
    mirrored = (heatmaps[:, :, ::-1] + rng.normal(0, 0.02, heatmaps.shape)).astype(np.float32)
    shift = not method.endswith("-udp")  # MMPose's UDP configs: shift_heatmap=False
    ours = (heatmaps + flip_back(mirrored, flip_index(), shift=shift)) * 0.5  # as app.pose does
    official = official_flip_average(nchw(heatmaps), nchw(mirrored), shift=shift)
    np.testing.assert_array_equal(nchw(ours), official)  # bit for bit
    assert_official(np.ascontiguousarray(ours), method)


class TwoAnswerRunner:
    """Runner double: the given heatmaps for the crops, the other ones for the mirrored crops."""

    input_size = (256, 192)

    def __init__(self, heatmaps, heatmaps_of_mirrored):
        self.answers = [heatmaps, heatmaps_of_mirrored]

    def __call__(self, batch):
        return self.answers.pop(0)


@pytest.mark.parametrize("method", ["quarter", "dark", "dark-udp"])
def test_the_estimators_flip_test_is_the_official_one(method):
    # Through PoseEstimator itself: the heatmaps it decodes are the official flip average, bit for bit.
    from app.pose import PoseConfig, PoseEstimator

    heatmaps = CASES["weak on the borders + noise 0.03"][:3]
    mirrored = np.ascontiguousarray(CASES["noisy 0.1"][:3, :, ::-1])
    udp = method.endswith("-udp")
    config = PoseConfig(flip=True, decode=method.removesuffix("-udp"), udp=udp)
    estimator = PoseEstimator(TwoAnswerRunner(heatmaps, mirrored), config)
    boxes = np.array([[10, 20, 110, 220], [50, 60, 90, 160], [0, 0, 300, 400]], np.float32)
    result = estimator.estimate(np.zeros((480, 640, 3), np.uint8), boxes, return_heatmaps=True)
    official = official_flip_average(nchw(heatmaps), nchw(mirrored), shift=not udp)
    np.testing.assert_array_equal(nchw(result.heatmaps), official)
    assert_official(result.heatmaps, method)


@pytest.mark.parametrize("method", ["dark", "dark-udp"])
@pytest.mark.parametrize("size", [(8, 8), (24, 16), (64, 48), (96, 72)])
def test_dark_equals_the_official_on_every_model_heatmap_size(size, method):
    # Heatmaps are a quarter of inputs that are multiples of 32; 96 x 72 (384 x 288 inputs, targets
    # of sigma 3) blurs with MMPose's 17 x 17 kernel; on 8 x 8 the kernel is wider than the map.
    h, w = size
    sigma = 3.0 if h == 96 else 2.0
    rng = np.random.default_rng(h * w)
    centres = np.stack([rng.uniform(-1, w, (6, K)), rng.uniform(-1, h, (6, K))], axis=-1)
    clean = render_gaussians(centres, np.ones((6, K), bool), size=size, sigma=sigma)
    noisy = clean * rng.uniform(0.05, 1, (6, 1, 1, K)) + rng.normal(0, 0.05, clean.shape)
    for maps in (clean, noisy):
        assert_official(np.ascontiguousarray(maps, np.float32), method)


def test_udp_dark_leaves_peaks_that_are_not_one_and_noise_stays_finite():
    maps = CASES["flat, empty, negative, plateau"]
    coords, scores = decode_heatmaps(maps, "dark", udp=True)
    argmax, _ = argmax_heatmaps(maps)
    not_positive = scores <= 0
    assert not_positive.any()
    np.testing.assert_array_equal(coords[not_positive], 0)
    # 0.5 everywhere (map 1): zero gradient, so the regularised step is zero (no NaN from the
    # singular Hessian).
    np.testing.assert_array_equal(coords[1], argmax[1])
    for case in ("noise only", "random widths, heights, noise"):
        coords, _ = decode_heatmaps(CASES[case], "dark", udp=True)
        assert np.isfinite(coords).all() and (coords >= 0).all()
        assert (coords[..., 0] <= W - 1).all() and (coords[..., 1] <= H - 1).all()


def test_the_cases_reach_every_branch_of_the_official_rules():
    """The equality tests above cover what they claim: each border rule and each Taylor outcome."""
    everything = np.concatenate(list(CASES.values()))
    coords, _ = argmax_heatmaps(everything)
    x, y = coords[..., 0], coords[..., 1]
    for value in (0, 1, 2, W - 3, W - 2, W - 1):
        assert (x == value).sum() >= 20, value
    for value in (0, 1, 2, H - 3, H - 2, H - 1):
        assert (y == value).sum() >= 20, value
    # quarter: x == 1 or y == 1 (excluded) and W - 2 / H - 2 (included) both occur with the other
    # axis inside, so the both-or-neither rule is exercised.
    inside_y = (y > 1) & (y < H - 1)
    assert ((x == 1) & inside_y).sum() >= 10 and ((x == W - 2) & inside_y).sum() >= 10
    # dark: steps that leave the map (the clip) and steps on non-maxima (det != 0 but not negative
    # definite) both happen in the noisy cases.
    unclipped, _ = official_dark(nchw(everything), clip=False)
    off_map = (unclipped < 0) | (unclipped > [W - 1, H - 1])
    assert off_map.any(axis=-1).sum() >= 5
    clipped, _ = decode_heatmaps(everything, "dark")
    assert np.all((clipped >= 0) & (clipped <= [W - 1, H - 1]))
    step = np.abs(unclipped - coords).max(axis=-1)
    assert (step > 1).sum() >= 20  # the guard that refused steps over a pixel is gone


def local_path_share(heatmaps) -> float:
    """Share of the joints with a Taylor stencil that app.decode's local path decodes."""
    coords, peaks = argmax_heatmaps(heatmaps)
    x, y = coords[..., 0].astype(int), coords[..., 1].astype(int)
    people, joints = np.nonzero((x > 1) & (x < W - 2) & (y > 1) & (y < H - 2))
    _, sure = _local_dark(heatmaps, people, joints, x[people, joints], y[people, joints], peaks[people, joints])
    return sure.mean()


@pytest.mark.parametrize("case", ["clean anywhere", "clean on the borders", "weak + noise 0.03",
                                  "weak on the borders + noise 0.03", "noisy 0.1", "two peaks"])
def test_dark_decodes_a_networks_maps_without_the_whole_map_blur(case):
    # The equality above is not the whole-map path doing the work: on peaked maps the local path
    # (13 blurred pixels, no rescale) decodes nearly every joint; noise-only maps fall back more.
    assert local_path_share(CASES[case]) >= 0.9
    assert local_path_share(CASES["noise only"]) < 0.9


def test_dark_local_blur_is_the_official_blur_at_every_position_and_batch_size():
    # The 15 x 15 patches laid side by side give the 13 stencil values of the official blur (5 zeros
    # of padding, cv2's default border), before its rescale, wherever the stencil sits
    # (off-map zeros included) and for any number of joints in the image.
    import cv2

    rng = np.random.default_rng(3)
    for m in (1, 2, 7, 17, 40):
        maps = rng.normal(0.5, 0.3, (2, H, W, m)).astype(np.float32)
        people, joints = rng.integers(0, 2, m), np.arange(m)
        x, y = rng.integers(2, W - 2, m), rng.integers(2, H - 2, m)
        x[0], y[0] = 2, H - 3  # corners of the stencil's range: most of the patch off the map
        x[-1], y[-1] = W - 3, 2
        values = _blurred_stencil(maps, people, joints, x, y)
        for i in range(m):
            padded = np.zeros((H + 10, W + 10), np.float32)
            padded[5:-5, 5:-5] = maps[people[i], :, :, joints[i]]
            blurred = cv2.GaussianBlur(padded, (11, 11), 0)[5:-5, 5:-5]
            expected = [blurred[y[i] + dy, x[i] + dx] for dx, dy in _STENCIL_POINTS]
            # Measured here: bit for bit. Another cv2 build may round differently; app.decode allows
            # for 2 float32 eps.
            np.testing.assert_array_max_ulp(values[:, i], np.array(expected, np.float32), maxulp=2)


def test_dark_where_the_log_floor_could_bite_takes_the_whole_map():
    # Peaks of 3e-10 blur to values under the reference's floor 1e-10 at the stencil's ends, where the
    # rescale decides whether the floor applies: those joints take the reference's own steps.
    heatmaps = gaussians(random_peaks(4, 9), np.full((4, K), 3e-10), sigma=1.0)
    assert local_path_share(heatmaps) < 0.5
    assert_official(heatmaps, "dark")


def test_an_off_map_step_is_clipped_to_the_edge_not_refused():
    # A weak peak beside a strong flat shoulder: the log-Hessian is nearly singular and the official
    # step runs far off the map; the product keeps the step's direction and stops at the edge.
    rng = np.random.default_rng(0)
    for _ in range(200):
        maps = rng.normal(0, 1.0, (1, H, W, 1)).astype(np.float32)
        unclipped, _ = official_dark(nchw(maps), clip=False)
        if (unclipped > [W - 1, H - 1]).any() or (unclipped < 0).any():
            break
    else:
        pytest.fail("no off-map step found in 200 noise maps")
    coords, _ = decode_heatmaps(maps, "dark")
    expected = np.clip(unclipped, 0, [W - 1, H - 1])
    assert np.abs(coords - expected).max() <= EXACT
    assert np.any((coords == 0) | (coords == [W - 1, H - 1]))


# --- round trips on Gaussians of known centre ------------------------------------------------------

def random_peaks(n: int, seed: int) -> np.ndarray:
    """(n, K, 2) sub-pixel centres uniform over the whole map, borders included."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, W - 1, (n, K)), rng.uniform(0, H - 1, (n, K))], axis=-1)


def distance_to_border(points: np.ndarray) -> np.ndarray:
    x, y = points[..., 0], points[..., 1]
    return np.minimum.reduce([x, W - 1 - x, y, H - 1 - y])


@pytest.fixture(scope="module")
def whole_map():
    points = random_peaks(120, seed=0)
    return points, render_gaussians(points, np.ones(points.shape[:2], bool))


def errors(heatmaps, points, method):
    coords, _ = decode_heatmaps(heatmaps, method)
    assert coords.shape == points.shape and coords.dtype == np.float32
    return np.linalg.norm(coords - points, axis=-1)


def test_sample_covers_the_border(whole_map):
    points, _ = whole_map
    near = distance_to_border(points) < 2
    assert near.mean() > 0.1  # the bounds below hold with these peaks in, not only far from the edges


def test_quarter_mean_error_within_0_3_px(whole_map):
    points, heatmaps = whole_map
    error = errors(heatmaps, points, "quarter")
    # Measured: mean 0.207, max 0.68 px (seed 0).
    assert error.mean() <= 0.3


def test_quarter_recovers_quarter_pixel_centres_where_the_rule_applies():
    # Centres a quarter pixel off an integer: the shift lands on them exactly when the argmax is in
    # 2..W-2 x 2..H-2 (both axes), and leaves the argmax on both axes otherwise.
    rng = np.random.default_rng(4)
    ints = np.stack([rng.integers(0, W, (40, K)), rng.integers(0, H, (40, K))], axis=-1).astype(np.float64)
    points = ints + rng.choice([-0.25, 0.25], ints.shape)
    points = np.clip(points, 0, [W - 1, H - 1])
    coords, _ = decode_heatmaps(render_gaussians(points, np.ones((40, K), bool)), "quarter")
    x, y = ints[..., 0], ints[..., 1]
    rule = (x > 1) & (x < W - 1) & (y > 1) & (y < H - 1)
    assert rule.mean() > 0.8 and (~rule).sum() > 50
    assert np.abs(coords - points)[rule].max() <= 0.05
    np.testing.assert_array_equal(coords[~rule], ints[~rule])


def test_dark_mean_error_over_the_whole_map(whole_map):
    points, heatmaps = whole_map
    error = errors(heatmaps, points, "dark")
    # Measured: mean 0.063, max 0.68 px (seed 0). The peaks within 2 px of the border carry it: the
    # official stencil does not fit there (argmax kept) and the zero-padded blur drags peaks 2-3 px
    # from the border inward. See benchmarks/decode_bench.py.
    assert error.mean() <= 0.07


def test_dark_is_near_exact_away_from_the_border(whole_map):
    points, heatmaps = whole_map
    error = errors(heatmaps, points, "dark")
    interior = distance_to_border(points) >= 3
    # Measured: mean 0.0024, max 0.051 px; max 0.0006 px beyond 5 px from the border.
    assert error[interior].mean() <= 0.01
    assert error[interior].max() <= 0.06
    assert error[distance_to_border(points) >= 5].max() <= 0.005


def test_argmax_exact_and_refinements_stay_put_on_integer_peaks():
    rng = np.random.default_rng(3)
    points = np.stack([rng.integers(0, W, (20, K)), rng.integers(0, H, (20, K))], axis=-1).astype(np.float64)
    heatmaps = render_gaussians(points, np.ones((20, K), bool))
    coords, scores = decode_heatmaps(heatmaps, "argmax")
    assert np.array_equal(coords, points)
    assert np.allclose(scores, 1.0)
    interior = distance_to_border(points) >= 5  # beyond the reach of the zero-padded blur's border
    assert errors(heatmaps, points, "dark")[interior].max() <= 0.005
    # Neighbours of an integer peak are equal, so the quarter shift has no side to go to.
    assert errors(heatmaps, points, "quarter").max() == 0.0


def test_scores_are_the_peak_values():
    points = random_peaks(4, seed=5)
    heatmaps = render_gaussians(points, np.ones((4, K), bool)) * 0.7
    _, scores = decode_heatmaps(heatmaps, "dark")
    assert np.allclose(scores, heatmaps.max(axis=(1, 2)))


@pytest.mark.parametrize("method", ["dark", "quarter", "argmax"])
@pytest.mark.parametrize("fill", [0.0, 1e-30, 0.5, -1.0])
def test_flat_and_empty_heatmaps_decode_to_finite_values(method, fill):
    heatmaps = np.full((3, H, W, K), fill, np.float32)
    coords, scores = decode_heatmaps(heatmaps, method)
    assert np.isfinite(coords).all() and np.isfinite(scores).all()
    assert np.all((coords >= 0) & (coords <= [W - 1, H - 1]))


def test_a_peak_the_blur_loses_keeps_its_argmax():
    # A denormal spike blurs to 0 everywhere: the official rescale divides by that 0 and returns NaN;
    # the product keeps the argmax.
    heatmaps = np.zeros((1, H, W, 1), np.float32)
    heatmaps[0, 30, 20, 0] = 1e-44
    coords, scores = decode_heatmaps(heatmaps, "dark")
    np.testing.assert_array_equal(coords, [[[20, 30]]])
    assert scores[0, 0] > 0


def test_empty_batch_and_unknown_method():
    coords, scores = decode_heatmaps(np.zeros((0, H, W, K), np.float32), "dark")
    assert coords.shape == (0, K, 2) and scores.shape == (0, K)
    with pytest.raises(ValueError):
        decode_heatmaps(np.zeros((1, H, W, K), np.float32), "softargmax")


def test_flip_back_mirrors_swaps_and_shifts_one_pixel_right():
    index = flip_index()
    heatmaps = np.zeros((1, H, W, K), np.float32)
    heatmaps[0, 10, 5, 9] = 1.0  # left wrist, column 5, in the mirrored crop's prediction
    out = flip_back(heatmaps, index)
    # Mirrored column 5 -> 47 - 5 = 42, shifted right -> 43; left wrist (9) becomes right wrist (10).
    assert out[0, 10, 43, 10] == 1.0 and out.sum() == 1.0
    unshifted = flip_back(heatmaps, index, shift=False)
    assert unshifted[0, 10, 42, 10] == 1.0 and unshifted.sum() == 1.0


def test_flip_back_twice_with_the_shift_undone_is_identity():
    rng = np.random.default_rng(7)
    heatmaps = rng.random((2, H, W, K)).astype(np.float32)
    index = flip_index()
    once = flip_back(heatmaps, index)
    # Undo the shift where it is defined (the shift drops the last column and repeats the first).
    assert np.array_equal(once[:, :, 1:], flip_back(heatmaps, index, shift=False)[:, :, :-1])
    twice = flip_back(flip_back(heatmaps, index, shift=False), index, shift=False)
    assert np.array_equal(twice, heatmaps)
    assert np.isfinite(flip_back(np.zeros((1, H, W, K), np.float32), index)).all()


def test_flip_back_then_decode_matches_the_official_geometry():
    # A peak at input pixel x sits at heatmap x/4; the mirrored crop has it at input 191 - x, so the
    # network would put it at (191 - x)/4. flip_back brings it to x/4 + 0.25 (official residual).
    x_input = 100.0
    mirrored = np.array([[[(191 - x_input) / 4, 30.0]] * K])
    heatmaps = render_gaussians(mirrored, np.ones((1, K), bool))
    coords, _ = decode_heatmaps(flip_back(heatmaps, list(range(K))), "dark")
    assert np.allclose(coords[..., 0], x_input / 4 + 0.25, atol=0.01)
    assert np.allclose(coords[..., 1], 30.0, atol=0.01)
