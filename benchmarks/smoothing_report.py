"""Jitter and lag of the keypoint smoothers on a real jittery track, side by side in one run.

    python -m benchmarks.smoothing_report --write docs/smoothing.md

Data: ../shared/assets/tracks/dancer_movenet_0-800.npz, MoveNet run independently on every frame
of the dancer video (25 fps): she stands still in frames ~0-60 and dances from ~200 on.

Metrics (a joint counts at frame t when its raw score is >= the threshold, 0.3):
  jitter  mean over frames t = 5..60 and joints confident at t-1, t, t+1 of the acceleration
          magnitude |p[t+1] - 2 p[t] + p[t-1]| in px/frame^2. She stands still there, so all of it
          is noise; lower is better.
  lag     on frames t = 200..799, for each joint, the shift d (frames, on a 0.01 grid from -2 to 5)
          minimising the mean over its confident frames of |filtered(t) - raw(t - d)|^2, raw
          linearly interpolated between frames; then the mean over the joints. Positive d: the
          filtered track trails the raw one by d frames.

Rows: raw, the Kalman filter at its defaults, One Euro at MediaPipe Pose's settings, a sweep of the
Kalman process noise (both motion models), and the cost per person-frame of the one block-diagonal
filter against one filterpy filter per joint. `--write` replaces the generated part of
docs/smoothing.md (between its report markers) with the tables.
"""

import argparse
import os
import platform
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import app  # noqa: F401  (first: keeps triton out of any process that imports torch later)
from benchmarks.machine import cpu_model  # noqa: E402

import filterpy  # noqa: E402
import numpy as np  # noqa: E402
from filterpy.common import Q_discrete_white_noise  # noqa: E402
from filterpy.kalman import KalmanFilter  # noqa: E402

from app.smoothing import KalmanConfig, KeypointKalman, OneEuroFilter, person_scale  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACKS = ROOT.parent / "shared" / "assets" / "tracks" / "dancer_movenet_0-800.npz"
THRESHOLD = KalmanConfig().score_threshold
STILL = (5, 60)  # centre frames of the jitter window, inclusive
MOVING = (200, 799)  # frames of the lag window, inclusive
GOAL_JITTER_CUT = 0.60  # at least this fraction of the raw jitter removed
GOAL_LAG = 1.0  # frames, at most
SWEEP = {"velocity": (0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008),
         "acceleration": (0.0001, 0.0002, 0.0003, 0.0005, 0.001)}
MARK_START, MARK_END = "<!-- smoothing-report:start -->", "<!-- smoothing-report:end -->"


def load_tracks(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """keypoints (T, K, 2) px, scores (T, K), fps."""
    data = np.load(path)
    kpts = data["kpts"].astype(np.float64)
    return kpts[..., :2], kpts[..., 2], float(data["fps"])


def jitter(track: np.ndarray, scores: np.ndarray, frames: tuple[int, int] = STILL,
           threshold: float = THRESHOLD) -> float:
    """Mean |p[t+1] - 2p[t] + p[t-1]| (px/frame^2) over centre frames t in `frames` (inclusive) and
    joints confident at t-1, t and t+1. track (T, K, 2), scores (T, K)."""
    t = np.arange(frames[0], frames[1] + 1)
    acceleration = np.linalg.norm(track[t + 1] - 2 * track[t] + track[t - 1], axis=-1)
    confident = (scores[t - 1] >= threshold) & (scores[t] >= threshold) & (scores[t + 1] >= threshold)
    return float(acceleration[confident].mean())


def joint_lags(track: np.ndarray, raw: np.ndarray, scores: np.ndarray, frames: tuple[int, int] = MOVING,
               threshold: float = THRESHOLD, shifts: np.ndarray | None = None, min_frames: int = 100
               ) -> np.ndarray:
    """Per joint (K,), the shift d (frames) minimising mean |track(t) - raw(t - d)|^2 over its
    confident frames t in `frames` (inclusive), raw linearly interpolated; NaN for a joint with
    fewer than `min_frames` confident frames. track, raw (T, K, 2); scores (T, K)."""
    shifts = np.round(np.arange(-2.0, 5.0 + 1e-9, 0.01), 2) if shifts is None else shifts
    t = np.arange(frames[0], frames[1] + 1)
    times = np.arange(len(raw))
    lags = np.full(raw.shape[1], np.nan)
    for joint in range(raw.shape[1]):
        confident = scores[t, joint] >= threshold
        if confident.sum() < min_frames:
            continue
        when = t[confident][None, :] - shifts[:, None]  # (S, n) times to read raw at
        shifted = np.stack([np.interp(when, times, raw[:, joint, axis]) for axis in range(2)], axis=-1)
        errors = ((track[t[confident], joint][None] - shifted) ** 2).sum(-1).mean(axis=1)
        lags[joint] = shifts[int(np.argmin(errors))]
    return lags


def lag(track, raw, scores, **kwargs) -> float:
    """Mean over joints of `joint_lags` (frames)."""
    return float(np.nanmean(joint_lags(track, raw, scores, **kwargs)))


def run_smoother(smoother, keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Feed a (T, K, 2) track frame by frame -> smoothed (T, K, 2)."""
    out = np.zeros_like(keypoints)
    for t in range(len(keypoints)):
        out[t] = smoother.update(keypoints[t], scores[t])[0]
    return out


def cost_us(make_smoother, keypoints: np.ndarray, scores: np.ndarray, repeats: int = 3) -> float:
    """Microseconds per person-frame: the best of `repeats` full passes, each with a fresh smoother
    (the best, because other processes on a shared CPU only ever add time)."""
    best = float("inf")
    for _ in range(repeats):
        smoother = make_smoother()
        start = time.perf_counter()
        run_smoother(smoother, keypoints, scores)
        best = min(best, time.perf_counter() - start)
    return best / len(keypoints) * 1e6


class PerJointKalman:
    """The alternative layout, for the speed comparison only: one 4-state filterpy filter per joint.

    Same model, noise and scale as KeypointKalman with no gate and no hiding (low-score joints are
    predicted), so on the same input both must give the same numbers."""

    def __init__(self, config: KalmanConfig):
        self.config = config
        self.filters: list[KalmanFilter | None] = []

    def update(self, keypoints, scores, scale=None):
        config = self.config
        if not self.filters:
            self.filters = [None] * len(keypoints)
        measured = np.isfinite(keypoints).all(axis=1) & (scores >= config.score_threshold)
        scale = person_scale(keypoints, np.where(measured, scores, 0.0), config.score_threshold)
        q = Q_discrete_white_noise(dim=2, dt=1.0, var=(config.process_noise * scale) ** 2, block_size=2)
        out = np.zeros_like(keypoints)
        for joint, kf in enumerate(self.filters):
            variance = (config.measurement_noise * scale / max(scores[joint], config.score_threshold)) ** 2
            if kf is None and measured[joint]:
                kf = self.filters[joint] = KalmanFilter(dim_x=4, dim_z=2)
                kf.F = np.kron(np.eye(2), [[1.0, 1.0], [0.0, 1.0]])
                kf.H = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0]])
                kf.x = np.array([keypoints[joint, 0], 0.0, keypoints[joint, 1], 0.0])
                velocity = (config.initial_velocity * scale) ** 2
                kf.P = np.diag([variance, velocity, variance, velocity])
            elif kf is not None:
                kf.predict(Q=q)
                if measured[joint]:
                    kf.update(keypoints[joint], R=np.eye(2) * variance)
            out[joint] = keypoints[joint] if kf is None else kf.x[[0, 2]]
        return out, measured


def machine() -> str:
    return (f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
            f"{platform.python_version()}, numpy {np.__version__}, filterpy {filterpy.__version__}")


def report(path: Path) -> tuple[str, bool]:
    """Run every measurement; return the markdown tables and whether the goal holds at the defaults."""
    raw, scores, fps = load_tracks(path)
    lines = []
    raw_jitter = jitter(raw, scores)

    def row(name, track, micros=None):
        j, d = jitter(track, scores), lag(track, raw, scores)
        cost = "" if micros is None else f" {micros:.0f} |"
        lines.append(f"| {name} | {j:.2f} | {100 * (1 - j / raw_jitter):.0f}% | {d:+.2f} |{cost}")
        return j, d

    default = KalmanConfig()
    kalman = KeypointKalman(default)
    outputs, gate_restarts = np.zeros_like(raw), 0
    for t in range(len(raw)):
        outputs[t] = kalman.update(raw[t], scores[t])[0]
        gate_restarts += int(kalman.jumped.sum())
    kalman_us = cost_us(lambda: KeypointKalman(default), raw, scores)
    one_euro = run_smoother(OneEuroFilter(), raw, scores)
    one_euro_us = cost_us(OneEuroFilter, raw, scores)

    lines += [f"Track: `{path.name}`, {len(raw)} frames at {fps:g} fps, {raw.shape[1]} joints; "
              f"jitter on frames {STILL[0]}-{STILL[1]}, lag on frames {MOVING[0]}-{MOVING[1]}.", "",
              "| smoother | jitter px/frame^2 | jitter cut | lag frames | us per person-frame |",
              "|---|---|---|---|---|"]
    row("raw (MoveNet, per frame)", raw)
    k_jitter, k_lag = row(f"Kalman, defaults (velocity, process_noise {default.process_noise:g})", outputs, kalman_us)
    row("One Euro, MediaPipe Pose settings (min_cutoff 0.1, beta 40, derivate_cutoff 1)", one_euro, one_euro_us)
    goal = (1 - k_jitter / raw_jitter) >= GOAL_JITTER_CUT and k_lag <= GOAL_LAG
    lines += ["", f"Goal at the defaults (jitter cut >= {GOAL_JITTER_CUT:.0%}, lag <= {GOAL_LAG:g} frame): "
              f"{'met' if goal else 'NOT met'}. The gate (`gate` {default.gate:g} box diagonals) restarted "
              f"{gate_restarts} joint-frames of the {int((scores >= THRESHOLD).sum())} confident ones.", ""]

    lines += ["Process-noise sweep (everything else at its default):", "",
              "| motion model | process_noise | jitter px/frame^2 | jitter cut | lag frames |",
              "|---|---|---|---|---|"]
    for model, values in SWEEP.items():
        for value in values:
            track = run_smoother(KeypointKalman(replace(default, motion_model=model, process_noise=value)),
                                 raw, scores)
            j, d = jitter(track, scores), lag(track, raw, scores)
            marker = " (default)" if (model, value) == (default.motion_model, default.process_noise) else ""
            lines.append(f"| {model} | {value:g}{marker} | {j:.2f} | {100 * (1 - j / raw_jitter):.0f}% | {d:+.2f} |")

    # Layout: one block-diagonal filter against one filter per joint, on identical settings.
    plain = replace(default, gate=float("inf"), max_predict=10 ** 9)
    block = run_smoother(KeypointKalman(plain), raw, scores)
    per_joint = run_smoother(PerJointKalman(plain), raw, scores)
    difference = float(np.abs(block - per_joint).max())
    block_us = cost_us(lambda: KeypointKalman(plain), raw, scores)
    per_joint_us = cost_us(lambda: PerJointKalman(plain), raw, scores)
    lines += ["", "Filter layout (gate and hiding off in both, so they compute the same thing):", "",
              "| layout | us per person-frame | max difference px (float32 output) |", "|---|---|---|",
              f"| one filterpy filter, block-diagonal state (4K = {4 * raw.shape[1]}) | {block_us:.0f} | |",
              f"| one filterpy filter per joint ({raw.shape[1]} x 4 states) | {per_joint_us:.0f} | {difference:.1e} |"]
    return "\n".join(lines), goal


def write_into(doc: Path, text: str) -> None:
    content = doc.read_text()
    if MARK_START not in content or MARK_END not in content:
        raise SystemExit(f"{doc} has no {MARK_START} ... {MARK_END} section to replace")
    head, rest = content.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    doc.write_text(f"{head}{MARK_START}\n{text}\n{MARK_END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tracks", type=Path, default=DEFAULT_TRACKS, help="npz with kpts (T, K, 3) and fps")
    parser.add_argument("--write", type=Path, help="markdown file whose report section to replace")
    args = parser.parse_args()
    if not args.tracks.exists():
        raise SystemExit(f"{args.tracks} not found: the shared assets sit in ../shared/assets beside the clone")
    tables, goal = report(args.tracks)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    text = (f"Produced by `python -m benchmarks.smoothing_report --write docs/smoothing.md` on {stamp}, "
            f"{machine()}.\n\n{tables}")
    print(text)
    if args.write:
        write_into(args.write, text)
        print(f"\nwrote {args.write}")
    return 0 if goal else 1


if __name__ == "__main__":
    raise SystemExit(main())
