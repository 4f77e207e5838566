"""Offline (fixed-lag) smoothing for files: every frame is smoothed with the frames that follow it.

A video file needs no causal filter. `FixedLagStage` runs the same constant-velocity Kalman model
as the live smoother (`app.smoothing.KeypointKalman`, motion_model="velocity") forward over each
track, keeps the last `lag` filtered states, and smooths them backwards with filterpy's
Rauch-Tung-Striebel smoother (`KalmanFilter.rts_smoother`) over that window. For a linear-Gaussian
model the RTS pass over the last `lag` frames is exactly the fixed-lag smoothed estimate
E[x(t - lag) | z(0..t)]: what filterpy's `FixedLagSmoother` computes, but with the per-frame
measurement noise (from each keypoint's score), missing joints and restarts that the forward
filter handles (`FixedLagSmoother` takes one fixed R and no missing measurements).

The stage sits between the pipeline and the outputs:

    stage = FixedLagStage(fps=25.0)                 # lag: round(0.3 s * fps) = 8 frames
    for item, result in pipeline_results:           # (frame item, app.pipeline.FrameResult)
        for item, result in stage.push(item, result):
            write(item, result)                     # `lag` frames later, keypoints smoothed
    for item, result in stage.flush():              # the input ended: the last `lag` frames
        write(item, result)

It yields every pushed pair exactly once, in order, `lag` frames late, with each person's
`smoothed_keypoints` and `visible` replaced (everything else as the pipeline made it), so whatever
draws or writes `Person.keypoints` shows the offline result. Memory is bounded by `lag` frames and
by the people seen in the last `forget_after` frames, however long the video.

Restarts (a joint's gate jump, a joint returning after an occlusion, an id that now belongs to
someone else) cut the backward pass for those joints: the transition into a restart gets F = 0,
so no information flows from the new segment into the old one. The backward pass runs per
(joint, axis) block (`rts_blocks`), the same recursion as filterpy's `rts_smoother` on the full
block-diagonal matrices, at a fraction of the cost (see its docstring).
"""

from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from app.smoothing import KalmanBank, KalmanConfig


def offline_kalman_config() -> KalmanConfig:
    """The offline model: one constant-velocity filter (RTS needs one linear model), smoothed backwards.

    Its process noise is higher than a causal filter would want: the backward pass removes the lag
    a causal filter pays for, so it can follow fast motion and still cut the jitter
    (docs/smoothing.md measures the sweep)."""
    return KalmanConfig(motion_model="velocity", process_noise=0.002)


@dataclass
class OfflineConfig:
    lag_s: float = 0.3  # seconds each frame waits for the frames after it (8 frames at 25 fps)
    kalman: KalmanConfig = field(default_factory=offline_kalman_config)
    # A track unseen for this many frames is forgotten (the tracker drops ids after 12 missed frames).
    forget_after: int = 50


@dataclass
class _FrameRecord:
    """One frame's forward-filter step of the n people smoothed on it: what the backward pass and the
    output need. The state is 2K independent blocks of `b` entries per person (b = 2 for [position,
    velocity], one block per joint and axis): F, Q and P are block-diagonal, so only the blocks are
    kept, and Q is the same block for all of a person's joints, q_unit * q."""

    frame: int  # the stage's frame counter
    ids: np.ndarray  # (n,) track ids, in the order of `people`
    people: np.ndarray  # (n,) index of each in the frame's result.people
    x: np.ndarray  # (n, 2K, b) filtered states
    P: np.ndarray  # (n, 2K, b, b) filtered covariance blocks
    q: np.ndarray  # (n,) process-noise scale of the prediction into this frame, (noise * size)^2
    restarted: np.ndarray  # (n, K) joints that started afresh at this frame
    smoothed: np.ndarray  # (n, K, 2) forward output (the raw value for hidden joints)
    visible: np.ndarray  # (n, K) bool

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of each id (m,) in this record, and whether it is there at all (m,) bool. (The usual
        case, the same ids in the same order, the backward pass takes without asking.)"""
        if len(self.ids) == 0:
            return np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
        order = np.argsort(self.ids, kind="stable")
        where = np.minimum(np.searchsorted(self.ids[order], ids), len(order) - 1)
        return order[where], self.ids[order[where]] == ids


def state_blocks(x: np.ndarray, P: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """(D,) state and (D, D) block-diagonal covariance -> (D / b, b) and (D / b, b, b) blocks."""
    n = len(x) // b
    index = b * np.arange(n)[:, None] + np.arange(b)[None, :]  # (n, b)
    return x.reshape(n, b), P[index[:, :, None], index[:, None, :]]


def _inverse(matrices: np.ndarray) -> np.ndarray:
    """Inverses of (n, b, b) matrices; 2 x 2 ones in closed form (numpy's stacked inverse costs
    more than the whole backward pass for them); the pseudo-inverse where one is singular (only
    with degenerate inputs, e.g. a zero person size)."""
    if matrices.shape[-1] == 2:
        a, b = matrices[:, 0, 0], matrices[:, 0, 1]
        c, d = matrices[:, 1, 0], matrices[:, 1, 1]
        det = a * d - b * c
        if np.isfinite(1.0 / det).all():
            inverse = np.empty_like(matrices)
            inverse[:, 0, 0], inverse[:, 0, 1], inverse[:, 1, 0], inverse[:, 1, 1] = d, -b, -c, a
            return inverse / det[:, None, None]
    try:
        return np.linalg.inv(matrices)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(matrices)


def rts_blocks(xs: np.ndarray, Ps: np.ndarray, F: np.ndarray, Qs: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """Rauch-Tung-Striebel backward pass over independent state blocks; returns the smoothed first state.

    xs (m, n, b) filtered states, Ps (m, n, b, b) their covariances, F (b, b) the transition of every
    block, Qs (m, n, b, b) the process noise into each step, cut (m, n) bool: the block restarted at
    that step (F = 0 into it, so its gain is zero and no later information reaches the earlier ones).

    The same recursion as filterpy's `KalmanFilter.rts_smoother` (tests/test_smoothing.py checks the
    two agree to 1e-9), written per block because filterpy's works on the full (D, D) matrices:
    for 17 joints that is a 68 x 68 inverse and several 68 x 68 products per step, 10 times the
    time of these batched 2 x 2 ones (2.1 ms against 0.21 ms per 9-frame window,
    docs/smoothing.md), and the offline stage runs it for all people of a frame at once.
    """
    # The gains and predictions depend on the filtered states alone, not on the smoothed ones: they
    # are computed for every step of the window at once (a few batched operations instead of a few
    # per step, the same arithmetic on each matrix); only the smoothing itself runs back step by step.
    m, n, b = xs.shape
    predicted_cov = F @ Ps[:-1] @ F.T + Qs[1:]  # (m - 1, n, b, b)
    inverse = _inverse(predicted_cov.reshape(-1, b, b)).reshape(predicted_cov.shape)
    gain = Ps[:-1] @ F.T @ inverse
    gain[cut[1:]] = 0.0
    predicted = xs[:-1] @ F.T  # (m - 1, n, b)
    smoothed = xs[-1]
    for k in range(m - 2, -1, -1):
        smoothed = xs[k] + np.einsum("nij,nj->ni", gain[k], smoothed - predicted[k])
    return smoothed


class FixedLagStage:
    """Delays (item, FrameResult) pairs by `lag` frames and replaces their keypoints with fixed-lag
    smoothed ones; see the module docstring. fps sets lag = max(1, round(lag_s * fps)).

    All people of a frame go through one `KalmanBank` update forward and one batched backward pass
    when their frame is given back (no Python loop per person in the arithmetic); equal within 1e-9
    to the per-person stage it replaced (tests/offline_reference.py, tests/test_smoothing_vectorised.py)."""

    def __init__(self, fps: float, config: OfflineConfig | None = None, lag: int | None = None):
        self.config = config or OfflineConfig()
        if self.config.kalman.motion_model == "imm":
            raise ValueError("the offline smoother needs one linear model: motion_model 'velocity' or 'acceleration'")
        if lag is None:
            fps = fps if fps and np.isfinite(fps) and fps > 0 else 25.0
            lag = int(round(self.config.lag_s * fps))
        self.lag = max(1, int(lag))
        self._pending: deque[tuple[_FrameRecord, object, object]] = deque()  # (record, item, result)
        self._bank = KalmanBank(self.config.kalman)
        self._last_seen: dict[int, int] = {}  # track id -> last frame it was smoothed on
        self._frame = 0

    def __len__(self) -> int:
        """Pairs pushed and not yet given back (at most `lag`)."""
        return len(self._pending)

    def state_size(self) -> dict[str, int]:
        """What is held: it must stay bounded however long the video."""
        return {"frames": len(self._pending), "tracks": len(self._bank),
                "records": sum(len(record.ids) for record, _, _ in self._pending)}

    def push(self, item, result) -> list[tuple[object, object]]:
        """Filter this frame's people forward; return the pairs now `lag` frames old, smoothed."""
        frame = self._frame
        self._frame += 1
        ids = np.array([person.track_id for person in result.people], np.int64)
        # The same id twice in one frame: the second passes through unsmoothed.
        _, first = np.unique(ids, return_index=True)
        first = np.sort(first)
        record = self._forward(frame, ids[first], first, [result.people[i] for i in first])
        self._pending.append((record, item, result))
        ready = []
        while len(self._pending) > self.lag:
            ready.append(self._emit())
        self._forget(frame)
        return ready

    def _forward(self, frame: int, ids: np.ndarray, people_index: np.ndarray, people: list) -> _FrameRecord:
        b = self._bank.order
        if not people:
            return _FrameRecord(frame, ids, people_index, np.zeros((0, 0, b)), np.zeros((0, 0, b, b)),
                                np.zeros(0), np.zeros((0, 0), bool), np.zeros((0, 0, 2)), np.zeros((0, 0), bool))
        boxes = np.stack([np.asarray(person.box, np.float64) for person in people])
        scales = np.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        smoothed, visible = self._bank.update(
            ids, np.stack([person.raw_keypoints for person in people]),
            np.stack([person.scores for person in people]), scales)
        state = self._bank.model.take(self._bank.rows_of(ids), copy=True)  # kept for the backward pass
        q = (self._bank.model.noises[0] * self._bank.last_scale) ** 2
        self._last_seen.update(zip(ids.tolist(), [frame] * len(ids)))
        return _FrameRecord(frame, ids, people_index, state["x"], state["P"], q, self._bank.restarted.copy(),
                            smoothed, visible)

    def flush(self) -> list[tuple[object, object]]:
        """The input ended: every pair still held, smoothed with what followed it, in order."""
        ready = [self._emit() for _ in range(len(self._pending))]
        self._bank.reset()
        self._last_seen.clear()
        return ready

    def _forget(self, frame: int) -> None:
        """Tracks unseen for `forget_after` frames whose frames were all given back."""
        oldest = self._pending[0][0].frame if self._pending else frame + 1
        gone = [i for i, seen in self._last_seen.items() if seen < oldest and frame - seen > self.config.forget_after]
        self._bank.drop(gone)
        for track_id in gone:
            del self._last_seen[track_id]

    def _emit(self) -> tuple[object, object]:
        record, item, result = self._pending.popleft()
        if len(record.ids) == 0:
            return item, result
        positions = self._backward(record)
        smoothed = record.smoothed.copy()
        smoothed[record.visible] = positions[record.visible]
        smoothed = smoothed.astype(np.float32)
        people = list(result.people)  # duplicates of an id (see push): as the pipeline made them
        for n, index in enumerate(record.people):
            people[index] = replace(people[index], smoothed_keypoints=smoothed[n], visible=record.visible[n].copy())
        return item, replace(result, people=people)

    def _backward(self, first: _FrameRecord) -> np.ndarray:
        """(n, K, 2) positions of the n people of the oldest frame, each RTS-smoothed over their own
        records in the frames held after it (frames they are absent from are skipped, as their
        forward filter skipped them), all people in one batched pass."""
        records = [first] + [record for record, _, _ in self._pending]
        n, blocks, b = first.x.shape
        L = len(records)
        xs, Ps = np.zeros((L, n, blocks, b)), np.zeros((L, n, blocks, b, b))
        qs, restarted = np.zeros((L, n)), np.zeros((L, n, blocks // 2), bool)
        present = np.zeros((L, n), bool)
        first_ids = first.ids.tolist()
        for step, record in enumerate(records):  # a loop over the lag's frames, not over people
            if len(record.ids) == 0:
                continue
            if record.ids.tolist() == first_ids:  # the same people in the same order (the usual case)
                present[step] = True
                xs[step], Ps[step], qs[step], restarted[step] = record.x, record.P, record.q, record.restarted
                continue
            rows, present[step] = record.rows(first.ids)
            if present[step].all():
                xs[step], Ps[step], qs[step], restarted[step] = (record.x[rows], record.P[rows], record.q[rows],
                                                                 record.restarted[rows])
                continue
            here = present[step]
            xs[step, here], Ps[step, here] = record.x[rows[here]], record.P[rows[here]]
            qs[step, here], restarted[step, here] = record.q[rows[here]], record.restarted[rows[here]]
        # Each person's window: their own records in order. Frames they are absent from move to the
        # end as copies of their last record, cut off (F = 0 into them) so they change nothing.
        real = present
        if not present.all():
            order = np.argsort(~present, axis=0, kind="stable")  # (L, n): present frames first
            count = present.sum(axis=0)  # >= 1: everyone in `first` is present at step 0
            real = np.arange(L)[:, None] < count[None, :]
            source = np.where(real, order, order[count - 1, np.arange(n)][None, :])
            people = np.arange(n)[None, :]
            xs, Ps, qs, restarted = xs[source, people], Ps[source, people], qs[source, people], restarted[source, people]
        # A restart is a jump the motion model does not explain: F = 0 into it cuts the joint's past
        # from its new segment (both axes of the joint).
        cut = np.repeat(restarted, 2, axis=2) | ~real[:, :, None]  # (L, n, 2K)
        Qs = np.broadcast_to((self._bank.model.q_unit * qs[..., None, None])[:, :, None], (L, n, blocks, b, b))
        smoothed = rts_blocks(xs.reshape(L, n * blocks, b), Ps.reshape(L, n * blocks, b, b), self._bank.model.F,
                              Qs.reshape(L, n * blocks, b, b), cut.reshape(L, n * blocks))
        return smoothed[:, 0].reshape(n, blocks // 2, 2)


SMOOTHING_MODES = ("auto", "live", "offline")


def choose_smoothing(requested: str, live_source: bool, writes_files: bool) -> str:
    """"live" or "offline" for the demo. auto: offline when a file is read and an output written
    (every frame can wait 0.3 s for the ones after it), live for cameras and window-only runs."""
    if requested not in SMOOTHING_MODES:
        raise ValueError(f"unknown smoothing {requested!r}: use one of {', '.join(SMOOTHING_MODES)}")
    if requested != "auto":
        return requested
    return "offline" if writes_files and not live_source else "live"


def offline_stage(requested: str, source, writes_files, config: OfflineConfig | None = None
                  ) -> FixedLagStage | None:
    """The demo's smoothing stage for this source: a FixedLagStage when `choose_smoothing` says
    offline, None for live smoothing (the pipeline's own) and for folders of unrelated images.
    source: an app.sources.FrameSource (is_live, kind, fps); writes_files: whether a video or JSON is written."""
    if getattr(source, "kind", "") == "images":
        return None
    mode = choose_smoothing(requested, bool(getattr(source, "is_live", False)), bool(writes_files))
    return FixedLagStage(getattr(source, "fps", None) or 25.0, config) if mode == "offline" else None
