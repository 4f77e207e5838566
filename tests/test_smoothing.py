"""KeypointKalman, OneEuroFilter and SmootherBank on synthetic tracks with known truth, and the
jitter/lag goal on the real MoveNet track of the dancer (benchmarks/smoothing_report.py defines
the metrics; docs/smoothing.md has the full table)."""

import numpy as np
import pytest

from app.smoothing import (
    KalmanConfig, KeypointKalman, OneEuroConfig, OneEuroFilter, SmootherBank, SmoothingConfig,
)
from benchmarks.smoothing_report import jitter, joint_lags, lag, load_tracks, run_smoother

K = 17
SCALE = 400.0  # px: a person's box diagonal


def still_points(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(100, 500, (K, 2))


def test_noisy_still_points_are_steadied():
    rng = np.random.default_rng(0)
    truth = still_points()
    kalman = KeypointKalman()
    raw = truth + rng.normal(0, 3.0, (300, K, 2))
    smoothed = np.stack([kalman.update(frame, np.full(K, 0.8), scale=SCALE)[0] for frame in raw])
    settled = slice(30, None)
    raw_var = ((raw[settled] - truth) ** 2).mean()
    smoothed_var = ((smoothed[settled] - truth) ** 2).mean()
    assert raw_var / smoothed_var > 2.0  # measured 2.8 with these settings
    # and the frame-to-frame shake, which is what a viewer sees, drops far more
    scores = np.ones((300, K))
    assert jitter(smoothed, scores, (30, 298)) < 0.4 * jitter(raw, scores, (30, 298))


def test_constant_velocity_is_followed_without_lag_after_settling():
    rng = np.random.default_rng(1)
    start, velocity = still_points(1), np.array([6.0, -2.5])  # px per frame
    frames = 150
    truth = start[None] + velocity * np.arange(frames)[:, None, None]
    raw = truth + rng.normal(0, 1.0, truth.shape)
    kalman = KeypointKalman()
    smoothed = np.stack([kalman.update(frame, np.full(K, 0.9), scale=SCALE)[0] for frame in raw])
    scores = np.ones((frames, K))
    lags = joint_lags(smoothed, truth, scores, frames=(40, frames - 1), min_frames=50)
    assert np.abs(lags).max() < 1.0
    assert abs(lags.mean()) < 0.2
    # Without noise the constant-velocity model converges onto the line itself.
    kalman = KeypointKalman()
    for frame in truth:
        exact, _ = kalman.update(frame, np.full(K, 0.9), scale=SCALE)
    np.testing.assert_allclose(exact, truth[-1], atol=0.05)


def test_low_score_joints_are_predicted_then_hidden():
    config = KalmanConfig(max_predict=4)
    kalman = KeypointKalman(config)
    start, velocity = still_points(2), np.array([3.0, 1.0])
    scores = np.full(K, 0.9)
    for t in range(40):
        kalman.update(start + velocity * t, scores, scale=SCALE)
    weak = scores.copy()
    weak[9] = 0.1  # the left wrist fades
    for step in range(1, config.max_predict + 1):
        t = 39 + step
        measurement = start + velocity * t
        measurement[9] += 80.0  # whatever a weak joint reads, it must not pull the estimate
        smoothed, visible = kalman.update(measurement, weak, scale=SCALE)
        assert visible[9], f"hidden after only {step} weak frames"
        np.testing.assert_allclose(smoothed[9], start[9] + velocity * t, atol=0.5)  # predicted along its path
        assert visible.sum() == K
    t = 40 + config.max_predict
    measurement = start + velocity * t
    smoothed, visible = kalman.update(measurement, weak, scale=SCALE)
    assert not visible[9] and visible.sum() == K - 1
    np.testing.assert_array_equal(smoothed[9], measurement[9].astype(np.float32))  # the raw value, shown or not
    # When it returns it restarts at its measurement.
    back = start + velocity * (t + 1)
    back[9] += 30.0
    smoothed, visible = kalman.update(back, scores, scale=SCALE)
    assert visible[9]
    np.testing.assert_array_equal(smoothed[9], back[9].astype(np.float32))


def test_a_low_score_measurement_moves_the_estimate_less():
    kalman = KeypointKalman()
    truth = still_points(8)
    scores = np.full(K, 0.9)
    for _ in range(30):
        kalman.update(truth, scores, scale=SCALE)
    scores[[4, 5]] = [0.95, 0.35]  # both step by 20 px, one with a far lower score
    stepped = truth.copy()
    stepped[[4, 5]] += [20.0, 0.0]
    smoothed, _ = kalman.update(stepped, scores, scale=SCALE)
    confident_move, doubtful_move = smoothed[[4, 5], 0] - truth[[4, 5], 0]
    assert doubtful_move > 0.5  # still a measurement
    assert confident_move > 3 * doubtful_move  # R grows as 1 / score^2: (0.95 / 0.35)^2 = 7.4


def test_a_jump_beyond_the_gate_restarts_the_joint_and_a_smaller_one_is_smoothed():
    config = KalmanConfig()
    scores = np.full(K, 0.9)
    truth = still_points(3)

    def settled():
        kalman = KeypointKalman(config)
        for _ in range(30):
            kalman.update(truth, scores, scale=SCALE)
        return kalman

    kalman = settled()
    jumped = truth.copy()
    jumped[7] += [config.gate * SCALE * 1.2, 0.0]
    smoothed, visible = kalman.update(jumped, scores, scale=SCALE)
    np.testing.assert_array_equal(smoothed[7], jumped[7].astype(np.float32))
    assert kalman.jumped[7] and kalman.jumped.sum() == 1
    np.testing.assert_allclose(smoothed[np.arange(K) != 7], truth[np.arange(K) != 7], atol=0.01)

    kalman = settled()
    moved = truth.copy()
    moved[7] += [config.gate * SCALE * 0.8, 0.0]
    smoothed, _ = kalman.update(moved, scores, scale=SCALE)
    assert not kalman.jumped.any()
    assert 1.0 < np.linalg.norm(smoothed[7] - moved[7]) < config.gate * SCALE  # pulled, not teleported

    # The whole person jumps (the id now belongs to someone else): everything restarts.
    kalman = settled()
    elsewhere = truth + [0.0, config.gate * SCALE * 1.5]
    smoothed, _ = kalman.update(elsewhere, scores, scale=SCALE)
    np.testing.assert_array_equal(smoothed, elsewhere.astype(np.float32))


def test_the_gate_and_noise_are_in_person_sizes():
    # The same scene twice as large (a nearer person), with a twice larger scale, gives exactly
    # twice the output: the settings need no change with distance.
    rng = np.random.default_rng(4)
    truth = still_points(4)
    raw = truth + np.cumsum(rng.normal(0, 2.0, (120, K, 2)), axis=0)
    raw[60, 3] += 150  # one wild joint
    scores = rng.uniform(0.2, 1.0, (120, K))
    for make in (KeypointKalman, OneEuroFilter):
        near, far = make(), make()
        for frame, score in zip(raw, scores):
            a, visible_a = far.update(frame, score, scale=SCALE)
            b, visible_b = near.update(2 * frame, score, scale=2 * SCALE)
            np.testing.assert_allclose(b, 2 * a, rtol=1e-5, atol=1e-3)
            np.testing.assert_array_equal(visible_a, visible_b)


def test_nan_and_inf_inputs_never_produce_nan():
    rng = np.random.default_rng(5)
    truth = still_points(5)
    for smoother in (KeypointKalman(KalmanConfig(max_predict=2)), OneEuroFilter()):
        for t in range(60):
            keypoints = truth + rng.normal(0, 2.0, (K, 2))
            scores = np.full(K, 0.9)
            if t % 3 == 0:
                keypoints[rng.integers(0, K, 4)] = np.nan
            if t % 5 == 0:
                keypoints[rng.integers(0, K, 2), 0] = np.inf
                scores[rng.integers(0, K, 2)] = np.nan
            if 30 <= t < 40:
                keypoints[:] = np.nan  # the person vanished from the estimator entirely
            scale = [SCALE, None, np.nan, -1.0][t % 4]
            smoothed, visible = smoother.update(keypoints, scores, scale=scale)
            assert np.isfinite(smoothed).all(), f"{type(smoother).__name__} gave NaN at frame {t}"
            if isinstance(smoother, OneEuroFilter):  # (the Kalman filter predicts them for a while)
                assert not visible[~np.isfinite(keypoints).all(axis=1)].any()
        # A joint missing for good is hidden by the Kalman filter once max_predict has passed.
        if isinstance(smoother, KeypointKalman):
            for _ in range(3):
                keypoints = truth.copy()
                keypoints[0] = np.nan
                smoothed, visible = smoother.update(keypoints, np.full(K, 0.9))
            assert not visible[0] and visible[1:].all()
            assert np.isfinite(smoothed).all()
    # A person first seen with nothing usable: finite zeros, nothing visible.
    smoothed, visible = KeypointKalman().update(np.full((K, 2), np.nan), np.full(K, np.nan))
    assert np.isfinite(smoothed).all() and not visible.any()


def test_reset_starts_again_from_the_measurement():
    kalman = KeypointKalman()
    truth = still_points(6)
    for _ in range(10):
        kalman.update(truth, np.full(K, 0.9), scale=SCALE)
    kalman.reset()
    moved = truth + 5.0  # well inside the gate: without the reset it would be smoothed
    smoothed, visible = kalman.update(moved, np.full(K, 0.9), scale=SCALE)
    np.testing.assert_array_equal(smoothed, moved.astype(np.float32))
    assert visible.all()


def test_one_euro_follows_mediapipe_on_a_step():
    # One joint, one axis, by hand with MediaPipe's formulas (one_euro_filter.cc): a step of 10 px
    # at frame 1 with object scale 100 px and 25 fps.
    config = OneEuroConfig()
    euro = OneEuroFilter(config)
    zero, step = np.zeros((1, 2)), np.array([[10.0, 0.0]])
    first, _ = euro.update(zero, np.ones(1), scale=100.0)
    second, _ = euro.update(step, np.ones(1), scale=100.0)

    def alpha(cutoff):
        return 1.0 / (1.0 + 25.0 / (2 * np.pi * cutoff))

    speed = alpha(config.derivate_cutoff) * (10.0 / 100.0 * 25.0)  # low-passed from 0
    expected = alpha(config.min_cutoff + config.beta * speed) * 10.0
    np.testing.assert_array_equal(first, zero)
    np.testing.assert_allclose(second[0], [expected, 0.0], rtol=1e-6)


def test_smoother_bank_keeps_one_smoother_per_live_track():
    bank = SmootherBank(SmoothingConfig())
    truth = still_points(7)
    for track_id in (1, 2, 3):
        bank.update(track_id, truth + track_id, np.full(K, 0.9), SCALE)
    assert len(bank) == 3
    bank.retain([2, 3])
    assert 1 not in bank and len(bank) == 2
    bank.drop([3, 99])
    assert len(bank) == 1 and 2 in bank
    euro = SmootherBank(SmoothingConfig(method="one_euro"))
    smoothed, visible = euro.update(5, truth, np.full(K, 0.9))
    np.testing.assert_allclose(smoothed, truth, atol=1e-3)
    with pytest.raises(ValueError, match="unknown smoothing method"):
        SmootherBank(SmoothingConfig(method="median"))


def test_real_track_goal_jitter_cut_and_lag(dancer_tracks):
    raw, scores, fps = load_tracks(dancer_tracks)
    assert raw.shape == (800, K, 2) and fps == 25
    raw_jitter = jitter(raw, scores)
    smoothed = run_smoother(KeypointKalman(), raw, scores)
    assert 1 - jitter(smoothed, scores) / raw_jitter >= 0.60  # still part, frames 5-60
    assert lag(smoothed, raw, scores) <= 1.0  # moving part, frames 200-799
    assert lag(raw, raw, scores) == 0.0  # the metric itself: no shift aligns best
    # One Euro at MediaPipe's settings smooths too (docs/smoothing.md compares them).
    one_euro = run_smoother(OneEuroFilter(), raw, scores)
    assert 1 - jitter(one_euro, scores) / raw_jitter >= 0.5
