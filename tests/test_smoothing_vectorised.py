"""The vectorised Kalman smoothers (app.smoothing.KalmanBank, app.offline.FixedLagStage) against the
code they replaced (issue 17): filterpy's KalmanFilter and IMMEstimator per person
(tests/filterpy_reference.py) and the per-person offline stage (tests/offline_reference.py).
Equal within 1e-9 px on a real track and on synthetic crowds that exercise every rule."""

import numpy as np
import pytest

from app.offline import FixedLagStage
from app.pipeline import FrameResult, Person
from app.smoothing import MOTION_MODELS, KalmanBank, KalmanConfig, KeypointKalman
from benchmarks.smoothing_report import load_tracks
from tests.filterpy_reference import ReferenceKeypointKalman
from tests.offline_reference import ReferenceFixedLagStage

K = 17
TOLERANCE = 1e-9  # px, on the float64 states
# The float32 outputs: two float64 values 1e-12 apart can still round to neighbouring float32s.
FLOAT32 = float(np.finfo(np.float32).eps)


def crowd(seed: int, frames: int = 120, people: int = 6) -> list[list[tuple]]:
    """Synthetic frames of (track id, keypoints (K, 2), scores (K,), scale or None) with everything
    the smoother has rules for: people entering and leaving (ids 0..people-1 live in staggered
    windows), still and walking people, noise, low-score joints (occlusions) coasting past
    max_predict, NaN/inf joints, a single joint jumping beyond the gate, a whole person swapped
    (track reset), and frames whose scale must be measured from the keypoints."""
    rng = np.random.default_rng(seed)
    out = []
    base = rng.uniform(100, 900, (people, 1, 2)) + rng.normal(0, 40, (people, K, 2))
    speed = rng.choice([0.0, 0.0, 3.0, 8.0], (people, 1, 2)) * rng.choice([-1, 1], (people, 1, 2))
    start = rng.integers(0, frames // 2, people)
    stop = start + rng.integers(frames // 4, frames, people)
    start[0], stop[0] = 0, frames  # someone from the first frame to the last
    for t in range(frames):
        frame = []
        for p in range(people):
            if not start[p] <= t < stop[p]:
                continue
            truth = base[p] + speed[p] * (t - start[p])
            if t > frames // 2 and p % 3 == 1:
                truth = truth + np.array([3.0, -2.0]) * (t - frames // 2) ** 1.5 / 4  # accelerates away
            keypoints = truth + rng.normal(0, 2.5, truth.shape)
            scores = rng.uniform(0.35, 1.0, K)
            scores[rng.random(K) < 0.12] = rng.uniform(0.0, 0.29)  # occasional low-score joints
            if (t - start[p]) % 40 in range(10, 19):  # a joint occluded for 9 frames: coasts, then hidden
                scores[(p + 5) % K] = 0.05
            if rng.random() < 0.03:
                keypoints[rng.integers(K)] = np.nan
            if rng.random() < 0.02:
                scores[rng.integers(K)] = np.nan
            if rng.random() < 0.01:
                keypoints[rng.integers(K), 0] = np.inf
            if rng.random() < 0.04:
                keypoints[rng.integers(K)] += rng.choice([-1, 1], 2) * 150.0  # beyond the gate
            if t == (start[p] + stop[p]) // 2 and p % 2 == 0:
                keypoints = keypoints + 400.0  # the id now belongs to someone else: whole-person restart
            if rng.random() < 0.02:
                scores[:] = 0.1  # a frame with nothing measured
            scale = None if rng.random() < 0.15 else float(rng.uniform(150, 450))
            frame.append((p, keypoints, scores, scale))
        rng.shuffle(frame)  # ids in any order
        out.append(frame)
    return out


@pytest.mark.parametrize("motion_model", sorted(MOTION_MODELS))
def test_bank_equals_filterpy_per_person_on_a_synthetic_crowd(motion_model):
    config = KalmanConfig(motion_model=motion_model)
    bank = KalmanBank(config)
    references: dict[int, ReferenceKeypointKalman] = {}
    counts = {"gate": 0, "reset": 0, "hidden": 0, "coasting": 0}
    max_people = 0
    for frame in crowd(seed=3):
        ids = [p[0] for p in frame]
        max_people = max(max_people, len(ids))
        if not frame:
            continue
        got, got_visible = bank.update(ids, np.stack([p[1] for p in frame]), np.stack([p[2] for p in frame]),
                                       [p[3] for p in frame])
        for n, (track_id, keypoints, scores, scale) in enumerate(frame):
            reference = references.setdefault(track_id, ReferenceKeypointKalman(config))
            expected, visible = reference.update(keypoints, scores, scale=scale)
            np.testing.assert_allclose(bank.estimates([track_id])[0], reference.x[reference._positions],
                                       rtol=0, atol=TOLERANCE)
            np.testing.assert_allclose(got[n], expected, rtol=FLOAT32, atol=TOLERANCE)
            np.testing.assert_array_equal(got_visible[n], visible)
            np.testing.assert_array_equal(bank.jumped[n], reference.jumped)
            np.testing.assert_array_equal(bank.restarted[n], reference.restarted)
            counts["gate"] += int(0 < reference.jumped.sum() < K // 2)
            counts["reset"] += int(reference.jumped.sum() >= K // 2)
            counts["hidden"] += int((~visible).any())
            counts["coasting"] += int((visible & ~(np.nan_to_num(scores) >= 0.3)).any())
            if motion_model == "imm":
                np.testing.assert_allclose(bank.model.mu[bank.rows_of([track_id])[0]], reference._imm.mu,
                                           rtol=0, atol=1e-9)
    # the crowd did exercise the rules
    assert max_people >= 3 and min(counts.values()) > 0, counts


def test_bank_frees_ids_and_new_ids_start_afresh():
    config = KalmanConfig()
    bank = KalmanBank(config)
    frames = crowd(seed=8, frames=90, people=8)
    references: dict[int, ReferenceKeypointKalman] = {}
    last_seen: dict[int, int] = {}
    for t, frame in enumerate(frames):
        # drop ids unseen for 3 frames, as the pipeline drops dead tracks; the reference forgets them too
        dead = [i for i, seen in last_seen.items() if t - seen > 3]
        bank.drop(dead)
        for i in dead:
            references.pop(i, None), last_seen.pop(i)
        assert len(bank) == len(references)
        if not frame:
            continue
        ids = [p[0] + 100 * (p[0] in dead) for p in frame]
        got, _ = bank.update(ids, np.stack([p[1] for p in frame]), np.stack([p[2] for p in frame]),
                             [p[3] for p in frame])
        for n, (track_id, keypoints, scores, scale) in enumerate(frame):
            last_seen[ids[n]] = t
            expected, _ = references.setdefault(ids[n], ReferenceKeypointKalman(config)).update(
                keypoints, scores, scale=scale)
            np.testing.assert_allclose(got[n], expected, rtol=FLOAT32, atol=TOLERANCE)
            np.testing.assert_allclose(bank.estimates([ids[n]])[0],
                                       references[ids[n]].x[references[ids[n]]._positions], rtol=0, atol=TOLERANCE)
    bank.retain([])
    assert len(bank) == 0
    smoothed, visible = bank.update([], np.zeros((0, K, 2)), np.zeros((0, K)))  # nobody: nothing happens
    assert smoothed.shape == (0, K, 2) and visible.shape == (0, K) and len(bank) == 0
    with pytest.raises(ValueError, match="at most once"):
        bank.update([1, 1], np.zeros((2, K, 2)), np.ones((2, K)))


@pytest.mark.parametrize("motion_model", sorted(MOTION_MODELS))
def test_keypoint_kalman_equals_filterpy_on_the_real_dancer_track(dancer_tracks, motion_model):
    raw, scores, _ = load_tracks(dancer_tracks)
    config = KalmanConfig(motion_model=motion_model)
    kalman, reference = KeypointKalman(config), ReferenceKeypointKalman(config)
    for t in range(len(raw)):
        scale = None if t % 7 == 3 else 420.0 + 10 * np.sin(t / 30)
        got, visible = kalman.update(raw[t], scores[t], scale=scale)
        expected, expected_visible = reference.update(raw[t], scores[t], scale=scale)
        np.testing.assert_allclose(got, expected, rtol=FLOAT32, atol=TOLERANCE)
        np.testing.assert_array_equal(visible, expected_visible)
        np.testing.assert_allclose(kalman.x, reference.x, rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(kalman.mode_probabilities, reference.mode_probabilities, rtol=0, atol=1e-9)
        np.testing.assert_allclose(kalman.last_q, reference.last_q, rtol=1e-12)
        if motion_model != "imm":
            np.testing.assert_allclose(kalman.P, reference.P, rtol=0, atol=1e-9)


def stage_people(frame) -> list[Person]:
    people = []
    for track_id, keypoints, scores, scale in frame:
        size = (scale or 300.0) / np.sqrt(2)
        box = np.array([0.0, 0.0, size, size], np.float32)
        people.append(Person(track_id=track_id, box=box, box_score=0.9,
                             raw_keypoints=np.asarray(keypoints, np.float32),
                             smoothed_keypoints=np.zeros((K, 2), np.float32),
                             scores=np.asarray(scores, np.float32), visible=np.zeros(K, bool), kalman=True))
    return people


@pytest.mark.parametrize("lag", [1, 8])
def test_offline_stage_equals_the_per_person_stage_on_a_synthetic_crowd(lag):
    frames = crowd(seed=11, frames=150, people=7)
    new, old = FixedLagStage(25.0, lag=lag), ReferenceFixedLagStage(25.0, lag=lag)
    got, expected = [], []
    for t, frame in enumerate(frames):
        people = stage_people(frame)
        if t % 37 == 5 and people:
            people.append(people[0])  # the same id twice in a frame: the second passes through
        result = FrameResult(people=people, detected=True, timings_ms={})
        got += new.push(t, result)
        expected += old.push(t, result)
    got += new.flush()
    expected += old.flush()
    assert [t for t, _ in got] == [t for t, _ in expected] == list(range(len(frames)))
    compared = 0
    for (_, a), (_, b) in zip(got, expected):
        assert [p.track_id for p in a.people] == [p.track_id for p in b.people]
        for p, q in zip(a.people, b.people):
            np.testing.assert_allclose(p.smoothed_keypoints, q.smoothed_keypoints, rtol=FLOAT32, atol=TOLERANCE)
            np.testing.assert_array_equal(p.visible, q.visible)
            compared += 1
    assert compared > 400


def test_offline_stage_equals_the_per_person_stage_on_the_real_dancer_track(dancer_tracks):
    raw, scores, fps = load_tracks(dancer_tracks)
    new, old = FixedLagStage(fps), ReferenceFixedLagStage(fps)
    got, expected = [], []
    for t in range(len(raw)):
        frame = [(1, raw[t], scores[t], 420.0)] if t % 97 not in (50, 51) else []  # two short absences
        result = FrameResult(people=stage_people(frame), detected=True, timings_ms={})
        got += new.push(t, result)
        expected += old.push(t, result)
    got += new.flush()
    expected += old.flush()
    assert len(got) == len(expected) == len(raw)
    for (_, a), (_, b) in zip(got, expected):
        for p, q in zip(a.people, b.people):
            np.testing.assert_allclose(p.smoothed_keypoints, q.smoothed_keypoints, rtol=FLOAT32, atol=TOLERANCE)
