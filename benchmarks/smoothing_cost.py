"""Milliseconds per frame of the live Kalman (IMM) smoother and the offline stage, before and after
issue 17 (filterpy per person against one batched numpy update for everyone), 1 and 5 people.

    python -m benchmarks.smoothing_cost

Input: the real MoveNet dancer track (../shared/assets/tracks/dancer_movenet_0-800.npz, 17 joints);
5 people are five copies of it shifted apart, each with its own added noise. Old and new run
alternately, `--rounds` times, on the same frames; the table gives the median of the rounds' mean
ms per frame. "before" is the code the product ran until issue 17, kept as the tests' reference
(tests/filterpy_reference.py, tests/offline_reference.py).
"""

import argparse
import os
import platform
import time

import app  # noqa: F401  (first: keeps triton out, see app/__init__.py)
import numpy as np

from app.offline import FixedLagStage
from app.pipeline import FrameResult, Person
from app.smoothing import KalmanBank, KalmanConfig
from benchmarks.machine import cpu_model
from benchmarks.smoothing_report import DEFAULT_TRACKS, load_tracks
from tests.filterpy_reference import ReferenceKeypointKalman
from tests.offline_reference import ReferenceFixedLagStage


def people_frames(raw: np.ndarray, scores: np.ndarray, people: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, N, K, 2) keypoints, (T, N, K) scores: N shifted copies of the track, each with its own noise."""
    rng = np.random.default_rng(people)
    keypoints = raw[:, None] + 500.0 * np.arange(people)[None, :, None, None]
    keypoints = keypoints + rng.normal(0, 1.0, keypoints.shape) * (np.arange(people) > 0)[None, :, None, None]
    return keypoints, np.repeat(scores[:, None], people, axis=1)


def live_old(keypoints, scores, scale=420.0) -> float:
    filters = [ReferenceKeypointKalman(KalmanConfig()) for _ in range(keypoints.shape[1])]
    t0 = time.perf_counter()
    for frame, frame_scores in zip(keypoints, scores):
        for kalman, person, person_scores in zip(filters, frame, frame_scores):
            kalman.update(person, person_scores, scale=scale)
    return (time.perf_counter() - t0) * 1000 / len(keypoints)


def live_new(keypoints, scores, scale=420.0) -> float:
    bank = KalmanBank(KalmanConfig())
    ids = list(range(keypoints.shape[1]))
    scales = np.full(len(ids), scale)
    t0 = time.perf_counter()
    for frame, frame_scores in zip(keypoints, scores):
        bank.update(ids, frame, frame_scores, scales)
    return (time.perf_counter() - t0) * 1000 / len(keypoints)


def offline(make_stage, keypoints, scores) -> float:
    size = 420.0 / np.sqrt(2)
    box = np.array([0.0, 0.0, size, size], np.float32)
    results = [FrameResult(people=[Person(track_id=n, box=box, box_score=0.9, raw_keypoints=person.astype(np.float32),
                                          smoothed_keypoints=person.astype(np.float32),
                                          scores=person_scores.astype(np.float32),
                                          visible=np.ones(len(person), bool), kalman=True)
                                   for n, (person, person_scores) in enumerate(zip(frame, frame_scores))],
                           detected=True, timings_ms={}) for frame, frame_scores in zip(keypoints, scores)]
    stage = make_stage(25.0)
    t0 = time.perf_counter()
    for t, result in enumerate(results):
        stage.push(t, result)
    stage.flush()
    return (time.perf_counter() - t0) * 1000 / len(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="frames of the track per round (from frame 200)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    raw, scores, _ = load_tracks(DEFAULT_TRACKS)
    raw, scores = raw[200:200 + args.frames], scores[200:200 + args.frames]
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy "
          f"{np.__version__}; load average {os.getloadavg()[0]:.1f} at start")
    rows = []
    for people in (1, 5):
        keypoints, people_scores = people_frames(raw, scores, people)
        times = {key: [] for key in ("live old", "live new", "offline old", "offline new")}
        for _ in range(args.rounds):  # alternated, so load changes hit both alike
            times["live old"].append(live_old(keypoints, people_scores))
            times["live new"].append(live_new(keypoints, people_scores))
            times["offline old"].append(offline(ReferenceFixedLagStage, keypoints, people_scores))
            times["offline new"].append(offline(FixedLagStage, keypoints, people_scores))
        rows.append((people, {key: float(np.median(value)) for key, value in times.items()}))
    print(f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| people | live IMM before (ms/frame) | live IMM now | speed-up | offline before | offline now | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for people, t in rows:
        print(f"| {people} | {t['live old']:.3f} | {t['live new']:.3f} | {t['live old'] / t['live new']:.1f}x | "
              f"{t['offline old']:.3f} | {t['offline new']:.3f} | {t['offline old'] / t['offline new']:.1f}x |")


if __name__ == "__main__":
    main()
