"""The offline (fixed-lag) stage as it was before issue 17: a filterpy-based forward filter per track
and one backward pass per person. The reference that app.offline.FixedLagStage, vectorised across
people, must equal within 1e-9 (tests/test_smoothing.py)."""

from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from app.offline import OfflineConfig
from app.smoothing import KalmanConfig
from tests.filterpy_reference import ReferenceKeypointKalman


@dataclass
class _Record:
    """One forward-filter step of one track: what the backward pass and the output need.

    The state is 2K independent blocks of `b` entries (b = 2 for [position, velocity], one block per
    joint and axis): F, Q and P are block-diagonal, so only the blocks are kept."""

    frame: int  # the stage's frame counter
    x: np.ndarray  # (2K, b) filtered state
    P: np.ndarray  # (2K, b, b) filtered covariance blocks
    Q: np.ndarray  # (2K, b, b) process noise blocks of the prediction into this frame
    restarted: np.ndarray  # (K,) joints that started afresh at this frame
    smoothed: np.ndarray  # (K, 2) forward output (the raw value for hidden joints)
    visible: np.ndarray  # (K,) bool


def state_blocks(x: np.ndarray, P: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """(D,) state and (D, D) block-diagonal covariance -> (D / b, b) and (D / b, b, b) blocks."""
    n = len(x) // b
    index = b * np.arange(n)[:, None] + np.arange(b)[None, :]  # (n, b)
    return x.reshape(n, b), P[index[:, :, None], index[:, None, :]]


def rts_blocks(xs: np.ndarray, Ps: np.ndarray, F: np.ndarray, Qs: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """Rauch-Tung-Striebel backward pass over independent state blocks; returns the smoothed first state.

    xs (m, n, b) filtered states, Ps (m, n, b, b) their covariances, F (b, b) the transition of every
    block, Qs (m, n, b, b) the process noise into each step, cut (m, n) bool: the block restarted at
    that step (F = 0 into it, so its gain is zero and no later information reaches the earlier ones).

    The same recursion as filterpy's `KalmanFilter.rts_smoother` (tests/test_smoothing.py checks the
    two agree to 1e-9), written per block because filterpy's works on the full (D, D) matrices:
    for 17 joints that is a 68 x 68 inverse and several 68 x 68 products per step, 10 times the
    time of these batched 2 x 2 ones (2.1 ms against 0.21 ms per 9-frame window,
    docs/smoothing.md), and the offline stage runs it for every person and frame.
    """
    smoothed = xs[-1]
    for k in range(len(xs) - 2, -1, -1):
        predicted_cov = F @ Ps[k] @ F.T + Qs[k + 1]  # (n, b, b)
        try:
            inverse = np.linalg.inv(predicted_cov)
        except np.linalg.LinAlgError:  # only with degenerate inputs (e.g. a zero person size)
            inverse = np.linalg.pinv(predicted_cov)
        gain = Ps[k] @ F.T @ inverse
        gain[cut[k + 1]] = 0.0
        predicted = xs[k] @ F.T  # (n, b)
        smoothed = xs[k] + np.einsum("nij,nj->ni", gain, smoothed - predicted)
    return smoothed


class _Track:
    def __init__(self, config: KalmanConfig):
        self.kalman = ReferenceKeypointKalman(config)
        self.records: deque[_Record] = deque()
        self.last_seen = -1


class ReferenceFixedLagStage:
    """Delays (item, FrameResult) pairs by `lag` frames and replaces their keypoints with fixed-lag
    smoothed ones; see the module docstring. fps sets lag = max(1, round(lag_s * fps))."""

    def __init__(self, fps: float, config: OfflineConfig | None = None, lag: int | None = None):
        self.config = config or OfflineConfig()
        if self.config.kalman.motion_model == "imm":
            raise ValueError("the offline smoother needs one linear model: motion_model 'velocity' or 'acceleration'")
        if lag is None:
            fps = fps if fps and np.isfinite(fps) and fps > 0 else 25.0
            lag = int(round(self.config.lag_s * fps))
        self.lag = max(1, int(lag))
        self._pending: deque[tuple[int, object, object]] = deque()  # (frame counter, item, result)
        self._tracks: dict[int, _Track] = {}
        self._frame = 0

    def __len__(self) -> int:
        """Pairs pushed and not yet given back (at most `lag`)."""
        return len(self._pending)

    def state_size(self) -> dict[str, int]:
        """What is held: it must stay bounded however long the video."""
        return {"frames": len(self._pending), "tracks": len(self._tracks),
                "records": sum(len(track.records) for track in self._tracks.values())}

    def push(self, item, result) -> list[tuple[object, object]]:
        """Filter this frame's people forward; return the pairs now `lag` frames old, smoothed."""
        frame = self._frame
        self._frame += 1
        for person in result.people:
            track = self._tracks.get(person.track_id)
            if track is None:
                track = self._tracks[person.track_id] = _Track(self.config.kalman)
            if track.last_seen == frame:
                continue  # the same id twice in one frame: the second passes through unsmoothed
            track.last_seen = frame
            box = np.asarray(person.box, np.float64)
            scale = float(np.hypot(box[2] - box[0], box[3] - box[1]))
            smoothed, visible = track.kalman.update(person.raw_keypoints, person.scores, scale=scale)
            kalman = track.kalman
            b = kalman.block_size // 2
            x, P = state_blocks(kalman.x, kalman.P, b)
            _, Q = state_blocks(kalman.x, kalman.last_q, b)
            track.records.append(_Record(frame, x.copy(), P, Q, kalman.restarted.copy(), smoothed, visible))
        self._pending.append((frame, item, result))
        ready = []
        while len(self._pending) > self.lag:
            ready.append(self._emit())
        self._forget(frame)
        return ready

    def flush(self) -> list[tuple[object, object]]:
        """The input ended: every pair still held, smoothed with what followed it, in order."""
        ready = [self._emit() for _ in range(len(self._pending))]
        self._tracks.clear()
        return ready

    def _forget(self, frame: int) -> None:
        for track_id in [i for i, t in self._tracks.items()
                         if not t.records and frame - t.last_seen > self.config.forget_after]:
            del self._tracks[track_id]

    def _emit(self) -> tuple[object, object]:
        frame, item, result = self._pending.popleft()
        people = []
        for person in result.people:
            track = self._tracks.get(person.track_id)
            if track is None or not track.records or track.records[0].frame != frame:
                people.append(person)  # a duplicate id (see push): as the pipeline made it
                continue
            record = track.records[0]
            smoothed = record.smoothed.copy()
            positions = self._backward(track)
            shown = record.visible
            smoothed[shown] = positions[shown]
            track.records.popleft()
            people.append(replace(person, smoothed_keypoints=smoothed.astype(np.float32),
                                  visible=record.visible.copy()))
        return item, replace(result, people=people)

    def _backward(self, track: _Track) -> np.ndarray:
        """(K, 2) positions of the track's oldest record, RTS-smoothed over all its records."""
        records = track.records
        kalman = track.kalman
        b = kalman.block_size // 2
        if len(records) == 1:
            return records[0].x[:, 0].reshape(-1, 2)
        xs = np.stack([r.x for r in records])
        Ps = np.stack([r.P for r in records])
        Qs = np.stack([r.Q for r in records])
        # A restart is a jump the motion model does not explain: F = 0 into it cuts the joint's past
        # from its new segment (both axes of the joint).
        cut = np.repeat(np.stack([r.restarted for r in records]), 2, axis=1)
        F = kalman.F[:b, :b]
        return rts_blocks(xs, Ps, F, Qs, cut)[:, 0].reshape(-1, 2)
