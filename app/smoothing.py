"""Temporal smoothing of one person's keypoints: a Kalman filter (the default) and a One Euro filter.

Both take a frame's keypoints (K, 2) in image pixels with their scores (K,) and return the smoothed
keypoints (K, 2) and which joints to show (K,) bool. Every length is measured in units of the
person's size (`scale`, their box diagonal in pixels), so one set of settings serves near and far
people alike; time is in frames (the defaults are tuned on a 25 fps video, docs/smoothing.md).

`SmootherBank` keeps one smoother per track id and frees those of tracks that died.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from filterpy.common import Q_discrete_white_noise, inv_diagonal
from filterpy.kalman import IMMEstimator, KalmanFilter

from app.tracker import boxes_from_keypoints

# motion model -> state entries per axis. "imm": two constant-velocity models (still, moving) mixed
# by filterpy's IMMEstimator; the others are one filter.
MOTION_MODELS = {"imm": 2, "velocity": 2, "acceleration": 3}


@dataclass
class KalmanConfig:
    # Standard deviations, in units of the person's size (box diagonal in pixels) and frames.
    # The ratio of process to measurement noise sets the jitter/lag trade-off of one model;
    # docs/smoothing.md measures the sweep.
    # "imm" (the default): an interacting multiple model (Blom & Bar-Shalom 1988, filterpy's
    # IMMEstimator) over two constant-velocity models of the whole person, one still
    # (`still_process_noise`) and one moving (`process_noise`). A single model trades jitter
    # against lag with one knob; the mixture smooths hard while the person stands and follows
    # fast when they move (docs/smoothing.md: 85% jitter cut at 0.52 frames of lag against
    # 71%/0.76 for the single model it replaced). The whole person shares one mode: with 34
    # coordinates the mode is decided within a frame or two, where one joint's 2 would be noisy.
    motion_model: str = "imm"
    process_noise: float = 0.004  # random acceleration per frame^2 (jerk per frame^3 for "acceleration")
    still_process_noise: float = 0.0001  # "imm" only: the still model's random acceleration
    switch_probability: float = 0.01  # "imm" only: chance per frame of changing between still and moving
    # Keypoint error at score 1; it grows as 1 / score. On the dancer's still frames MoveNet's
    # joints wander 1.5-4.4 px (std) at scores around 0.65 on a ~420 px diagonal: about 0.0045.
    measurement_noise: float = 0.005
    # Prior on a fresh joint's speed per frame (and acceleration per frame^2): 0.02 diagonals is
    # about the dancer's mean joint speed (8 px/frame), so a new joint neither sticks nor flies.
    initial_velocity: float = 0.02
    # "velocity": one filter, state [position, velocity] per axis; "acceleration" adds an
    # acceleration. At equal jitter their lag is the same to within 0.02 frames (docs/smoothing.md).
    score_threshold: float = 0.3  # joints scoring less are predicted, not measured
    # Frames a joint is predicted without a measurement before it is hidden: 0.2 s at 25 fps
    # bridges a wrist passing behind the body, and a constant-velocity guess has not gone far yet.
    max_predict: int = 5
    # A measurement this far from the prediction restarts its joint at the measurement: the
    # filter would take many frames to walk there. 0.25 box diagonals (about 100 px for the
    # dancer) tripped on 2 of her 13315 confident joint-frames, both in one sudden arm movement
    # (frames 758-759, the wrist 155 px in one frame); a swapped person jumps further still.
    gate: float = 0.25
    # When at least this fraction of the measured joints jump at once, the whole person restarts
    # (the tracker gave this id to someone else, or the detector box moved to another person).
    track_reset_fraction: float = 0.5
    default_scale: float = 200.0  # pixels; used only while no scale was given and none can be measured


class _KalmanFilter(KalmanFilter):
    """filterpy's KalmanFilter with its measurement log-likelihood from the S^-1 the update already
    computed (plus a log-determinant), instead of scipy's multivariate_normal, which
    eigen-decomposes S again: that was 40% of the IMM's time for 34 measured coordinates."""

    @property
    def log_likelihood(self):
        if self._log_likelihood is None:
            _, log_det = np.linalg.slogdet(self.S)
            self._log_likelihood = -0.5 * (self.y @ self.SI @ self.y + log_det + len(self.y) * np.log(2 * np.pi))
        return self._log_likelihood


class _IMMEstimator(IMMEstimator):
    """filterpy's IMMEstimator with the mode update done in log space.

    filterpy multiplies each model's likelihood exp(log L); with 34 coordinates a sudden movement
    gives log L far below -745 for both models, both likelihoods floor at the smallest float, and
    the mode probabilities learn nothing from the very frame that should switch them. Subtracting
    the larger log-likelihood first is the same Bayes rule without the underflow."""

    def update(self, z):
        for f in self.filters:
            f.update(z)
        log_likelihood = np.array([f.log_likelihood for f in self.filters])
        self.likelihood = np.exp(log_likelihood - log_likelihood.max())  # relative: only ratios matter
        self.mu = self.cbar * self.likelihood
        self.mu /= np.sum(self.mu)
        self._compute_mixing_probabilities()
        self._compute_state_estimate()
        self.x_post = self.x.copy()
        self.P_post = self.P.copy()


def person_scale(keypoints: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """Diagonal (pixels) of the box `boxes_from_keypoints` derives for one person; NaN with < 2 joints.

    keypoints (K, 2), scores (K,). This is the box the pipeline tracks people with between detector
    runs, so a scale measured here matches the detector-box diagonal the pipeline passes.
    """
    box = boxes_from_keypoints(keypoints[None], scores[None], threshold=threshold)[0]
    return float(np.hypot(box[2] - box[0], box[3] - box[1]))


def _clean(keypoints, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K, 2) float64 keypoints, (K,) scores with non-finite ones zeroed, (K,) finite mask."""
    keypoints = np.asarray(keypoints, np.float64).reshape(-1, 2)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(scores) != len(keypoints):
        raise ValueError(f"got {len(keypoints)} keypoints but {len(scores)} scores")
    finite = np.isfinite(keypoints).all(axis=1) & np.isfinite(scores)
    return keypoints, np.where(np.isfinite(scores), scores, 0.0), finite


class KeypointKalman:
    """Kalman filter over a person's K joints, built on filterpy's KalmanFilter (and IMMEstimator).

    One filter holds all joints: the state is [x, vx, y, vy] per joint (4K; [x, vx, ax, y, vy, ay]
    with motion_model="acceleration"), with block-diagonal F, Q, P and diagonal R, so a single
    model computes exactly what K separate per-joint filters would, in one call instead of K
    (docs/smoothing.md measures both). motion_model="imm" (the default) runs two such filters, a
    still and a moving one, mixed by filterpy's IMMEstimator with one mode for the whole person.

    Per frame and joint: score >= threshold -> Kalman update (R grows as the score falls); below it
    (or NaN/inf) -> predicted only, still visible for `max_predict` frames, then hidden; a jump of
    more than `gate` person sizes -> the joint restarts at its measurement.

        kalman = KeypointKalman(KalmanConfig())
        smoothed, visible = kalman.update(keypoints, scores, scale=box_diagonal)

    After each update, `jumped` and `restarted` (K,) say which joints the gate restarted and which
    started afresh (gate, new or returning joints), and `last_q` is the process noise Q of the
    frame's prediction: what a backward (RTS) pass over the stored states needs (app.offline).
    """

    def __init__(self, config: KalmanConfig | None = None):
        self.config = config or KalmanConfig()
        if self.config.motion_model not in MOTION_MODELS:
            raise ValueError(f"unknown motion_model {self.config.motion_model!r}: use one of {sorted(MOTION_MODELS)}")
        if self.config.motion_model == "imm" and not 0.0 < self.config.switch_probability < 1.0:
            raise ValueError("switch_probability must be between 0 and 1 (exclusive), "
                             f"got {self.config.switch_probability}")
        self._order = MOTION_MODELS[self.config.motion_model]  # state entries per axis
        self._num_joints = 0
        self._filters: list[KalmanFilter] = []
        self._imm: IMMEstimator | None = None
        self.jumped = np.zeros(0, bool)
        self.restarted = np.zeros(0, bool)
        self.last_q: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the person: the next update starts every joint at its measurement."""
        self._filters = []
        self._imm = None

    @property
    def x(self) -> np.ndarray:
        """(4K,) or (6K,) state estimate: the mode-weighted mean for "imm"."""
        if self._imm is None:
            return self._filters[0].x
        return np.dot(self._imm.mu, [kf.x for kf in self._filters])

    @property
    def P(self) -> np.ndarray:
        """State covariance of a single-model filter (the one an RTS pass smooths)."""
        if self._imm is not None:
            raise ValueError("P of the IMM mixture is not the covariance of one linear model")
        return self._filters[0].P

    @property
    def F(self) -> np.ndarray:
        return self._filters[0].F

    @property
    def block_size(self) -> int:
        """State entries per joint (both axes): joint j owns entries [j * block_size, (j + 1) * block_size)."""
        return 2 * self._order

    @property
    def mode_probabilities(self) -> np.ndarray:
        """(2,) probabilities of [still, moving] for "imm"; (1,) [1.0] for one model."""
        return np.array([1.0]) if self._imm is None else self._imm.mu.copy()

    def _build(self, num_joints: int) -> None:
        self._num_joints = num_joints
        order = self._order
        dim = 2 * order * num_joints
        step = [[1.0, 1.0], [0.0, 1.0]] if order == 2 else [[1.0, 1.0, 0.5], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]
        imm = self.config.motion_model == "imm"
        self._filters = []
        for _ in range(2 if imm else 1):
            kf = _KalmanFilter(dim_x=dim, dim_z=2 * num_joints)
            kf.F = np.kron(np.eye(2 * num_joints), step)
            if not imm:
                # S = H P H' + R is diagonal here (each measured coordinate lives in its own block), so
                # filterpy's diagonal inverse is exact and skips a general matrix inversion. Not for
                # the IMM: mixing two estimates correlates the joints (the spread of the means).
                kf.inv = inv_diagonal
            kf.x = np.zeros(dim)  # 1-D state: filterpy keeps z and x 1-D then, which indexing wants
            kf.P = np.zeros((dim, dim))
            self._filters.append(kf)
        self._noises = ([self.config.still_process_noise, self.config.process_noise] if imm
                        else [self.config.process_noise])
        if imm:
            p = self.config.switch_probability
            self._imm = _IMMEstimator(self._filters, np.array([0.5, 0.5]), np.array([[1 - p, p], [p, 1 - p]]))
        else:
            self._imm = None
        # The highest derivative is white noise held constant over a frame, one block per joint and
        # axis; scaled by (process_noise * scale)^2 every frame.
        self._q_unit = Q_discrete_white_noise(dim=order, dt=1.0, var=1.0, block_size=2 * num_joints)
        # positions[j, a]: index of joint j's coordinate a (0 x, 1 y) in the state vector.
        self._positions = order * (2 * np.arange(num_joints)[:, None] + np.arange(2)[None, :])
        self._alive = np.zeros(num_joints, bool)  # joint has a state: measured lately
        self._missed = np.zeros(num_joints, np.int64)  # frames since the last measurement
        self._held = np.zeros((num_joints, 2))  # last estimate, shown for joints hidden and unmeasured
        self._scale = self.config.default_scale

    def _restart(self, joints: np.ndarray, positions: np.ndarray, pos_var: np.ndarray, vel_var: float) -> None:
        """Put joints (J,) at positions (J, 2), still, with position variance pos_var (J,), in every model."""
        width = 2 * self._order
        blocks = width * joints[:, None] + np.arange(width)[None, :]  # (J, width) state indices
        variances = np.full((len(joints), width), vel_var)
        variances[:, [0, self._order]] = pos_var[:, None]
        for kf in self._filters:
            kf.x[blocks] = 0.0
            kf.x[self._positions[joints]] = positions
            kf.P[blocks.reshape(-1), :] = 0.0
            kf.P[:, blocks.reshape(-1)] = 0.0
            kf.P[blocks, blocks] = variances

    def _choose_scale(self, scale, keypoints, scores, measured) -> float:
        if scale is not None and np.isfinite(scale) and scale > 0:
            self._scale = float(scale)
        elif measured.sum() >= 2:
            measured_scale = person_scale(keypoints, np.where(measured, scores, 0.0), self.config.score_threshold)
            if np.isfinite(measured_scale) and measured_scale > 0:
                self._scale = measured_scale
        return self._scale  # otherwise the last known size

    def update(self, keypoints: np.ndarray, scores: np.ndarray, scale: float | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Filter one frame of one person.

        keypoints: (K, 2) image pixels; scores: (K,); scale: the person's size in pixels (box
        diagonal); None measures it from the confident keypoints. NaN/inf joints count as missing.
        Returns smoothed (K, 2) float32 (always finite) and visible (K,) bool. A hidden joint
        carries its raw measurement when finite, else its last estimate.
        """
        config = self.config
        keypoints, scores, finite = _clean(keypoints, scores)
        if not self._filters or self._num_joints != len(keypoints):
            self._build(len(keypoints))
        alive = self._alive
        measured = finite & (scores >= config.score_threshold)
        scale = self._choose_scale(scale, keypoints, scores, measured)

        qs = [self._q_unit * (noise * scale) ** 2 for noise in self._noises]
        self.last_q = qs[-1]
        if self._imm is None:
            self._filters[0].predict(Q=qs[0])
        else:
            for kf, q in zip(self._filters, qs):
                kf.Q = q
            self._imm.predict()
        measurement_var = (config.measurement_noise * scale / np.maximum(scores, config.score_threshold)) ** 2
        velocity_var = (config.initial_velocity * scale) ** 2
        restarted = ~alive
        if not alive.all():
            # Joints without a state stay parked, still, with a bounded variance however long they
            # are away: they restart from their next measurement anyway.
            parked = np.flatnonzero(~alive)
            self._restart(parked, self._held[parked], np.full(len(parked), velocity_var), velocity_var)

        predicted = self.x[self._positions]
        tracked = measured & alive
        jump = np.linalg.norm(keypoints - predicted, axis=1)
        jumped = tracked & (jump > config.gate * scale)
        if jumped.any() and jumped.sum() >= config.track_reset_fraction * tracked.sum():
            jumped = tracked
        self.jumped = jumped  # (K,) joints restarted by the gate this frame, for callers and tests
        fresh = measured & (~alive | jumped)
        if fresh.any():
            joints = np.flatnonzero(fresh)
            self._restart(joints, keypoints[joints], measurement_var[joints], velocity_var)
        self.restarted = restarted | fresh

        update = measured & ~fresh
        if update.any():
            # Unmeasured joints get an all-zero row of H (and a dummy unit variance): their gain is
            # exactly zero, so one fixed-size update serves any subset of joints.
            rows = np.flatnonzero(np.repeat(update, 2))
            H = np.zeros((2 * self._num_joints, self._filters[0].dim_x))
            H[rows, self._positions.reshape(-1)[rows]] = 1.0
            R = np.ones(2 * self._num_joints)
            R[rows] = np.repeat(measurement_var, 2)[rows]
            z = np.where(np.repeat(update, 2), keypoints.reshape(-1), 0.0)
            if self._imm is None:
                self._filters[0].update(z, R=np.diag(R), H=H)
            else:
                for kf in self._filters:
                    kf.R, kf.H = np.diag(R), H
                self._imm.update(z)

        self._missed[measured] = 0
        self._missed[~measured & alive] += 1
        alive |= measured
        gone = alive & (self._missed > config.max_predict)
        alive &= ~gone

        smoothed = self.x[self._positions]
        hidden_value = np.where(finite[:, None], keypoints, self._held)
        smoothed = np.where(alive[:, None] & np.isfinite(smoothed), smoothed, hidden_value)
        self._held[alive] = smoothed[alive]
        return smoothed.astype(np.float32), alive.copy()


@dataclass
class OneEuroConfig:
    """One Euro filter settings; the defaults are MediaPipe Pose's for its pose landmarks.

    mediapipe/modules/pose_landmark/pose_landmark_filtering.pbtxt (google-ai-edge/mediapipe), node
    LandmarksSmoothingCalculator, one_euro_filter { min_cutoff: 0.1 beta: 40.0 derivate_cutoff: 1.0 }.
    Speeds there are divided by the object scale (mediapipe/calculators/util/
    landmarks_smoothing_calculator_utils.cc, GetObjectScale: the mean of the width and height of the
    landmarks' bounding box in pixels), so beta is per object size per second.
    """

    min_cutoff: float = 0.1  # Hz: the cutoff when the joint is still
    beta: float = 40.0  # cutoff increase per (object sizes per second) of speed
    derivate_cutoff: float = 1.0  # Hz: smoothing of the speed estimate
    fps: float = 25.0  # frames per second of the input (MediaPipe reads it from timestamps)
    score_threshold: float = 0.3  # only for the `visible` output: the filter itself uses every finite joint
    # "raw": the speed is the change of the raw value, as MediaPipe and the paper's C++ code do;
    # "filtered": the change from the last *output*, as common Python ports do. The issue-12
    # harness's One Euro numbers come from the latter (docs/smoothing.md shows both).
    speed_from: str = "raw"


class OneEuroFilter:
    """One Euro filter (Casiez, Roussel, Vogel, CHI 2012) over a person's (K, 2) keypoints, as MediaPipe runs it.

    Written here because no maintained pip package does it for arrays with a per-frame value
    scale; it follows mediapipe/util/filtering/one_euro_filter.cc: the speed comes from the last
    raw value, is scaled by 1 / object scale and low-passed at `derivate_cutoff`, and sets the
    position cutoff to min_cutoff + beta * |speed|. Non-finite joints keep their last output.
    """

    def __init__(self, config: OneEuroConfig | None = None):
        self.config = config or OneEuroConfig()
        if self.config.speed_from not in ("raw", "filtered"):
            raise ValueError(f"unknown speed_from {self.config.speed_from!r}: use 'raw' or 'filtered'")
        self.reset()

    def reset(self) -> None:
        self._value: np.ndarray | None = None  # (K, 2) last output
        self._raw: np.ndarray | None = None  # (K, 2) last raw input
        self._speed: np.ndarray | None = None  # (K, 2) low-passed speed, object sizes per second
        self._seen: np.ndarray | None = None  # (K,) joint has had a finite value

    def _alpha(self, cutoff):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau * self.config.fps)

    def update(self, keypoints: np.ndarray, scores: np.ndarray | None = None, scale: float | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """keypoints (K, 2) pixels, scores (K,) or None, scale: object size in pixels (None: MediaPipe's
        mean of the keypoints' box width and height). Returns smoothed (K, 2) float32, visible (K,)."""
        config = self.config
        if scores is None:
            scores = np.ones(len(np.asarray(keypoints).reshape(-1, 2)))
        keypoints, scores, finite = _clean(keypoints, scores)
        if self._value is None or len(self._value) != len(keypoints):
            self._value = np.zeros_like(keypoints)
            self._raw = np.zeros_like(keypoints)
            self._speed = np.zeros_like(keypoints)
            self._seen = np.zeros(len(keypoints), bool)
        if scale is None or not np.isfinite(scale) or scale <= 0:
            points = keypoints[finite]
            scale = float(np.mean(points.max(axis=0) - points.min(axis=0))) if len(points) >= 2 else 0.0
        if not scale > 0:
            scale = 1.0  # MediaPipe skips filtering below a minimum scale; here the pixel speed is used

        first = finite & ~self._seen
        going = finite & self._seen
        previous = self._value if config.speed_from == "filtered" else self._raw
        speed = (keypoints - previous) * config.fps / scale
        speed_alpha = self._alpha(config.derivate_cutoff)
        self._speed = np.where(going[:, None], speed_alpha * speed + (1 - speed_alpha) * self._speed,
                               np.where(first[:, None], 0.0, self._speed))
        alpha = self._alpha(config.min_cutoff + config.beta * np.abs(self._speed))
        filtered = alpha * keypoints + (1 - alpha) * self._value
        self._value = np.where(going[:, None], filtered, np.where(first[:, None], keypoints, self._value))
        self._raw = np.where(finite[:, None], keypoints, self._raw)
        self._seen |= finite
        visible = finite & (scores >= config.score_threshold)
        return self._value.astype(np.float32), visible


@dataclass
class SmoothingConfig:
    method: str = "kalman"  # "kalman" or "one_euro"
    kalman: KalmanConfig = field(default_factory=KalmanConfig)
    one_euro: OneEuroConfig = field(default_factory=OneEuroConfig)


class SmootherBank:
    """One smoother per track id, created on first sight and freed when its track dies.

        bank = SmootherBank(SmoothingConfig())
        smoothed, visible = bank.update(track_id, keypoints, scores, scale)
        bank.retain(tracker.active_ids())  # or bank.drop(tracker.dropped_ids())
    """

    def __init__(self, config: SmoothingConfig | None = None):
        self.config = config or SmoothingConfig()
        if self.config.method not in ("kalman", "one_euro"):
            raise ValueError(f"unknown smoothing method {self.config.method!r}: use 'kalman' or 'one_euro'")
        self._smoothers: dict[int, KeypointKalman | OneEuroFilter] = {}

    def _new(self) -> KeypointKalman | OneEuroFilter:
        if self.config.method == "kalman":
            return KeypointKalman(self.config.kalman)
        return OneEuroFilter(self.config.one_euro)

    def update(self, track_id: int, keypoints: np.ndarray, scores: np.ndarray, scale: float | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Smooth one person's keypoints (K, 2) with scores (K,) -> (smoothed (K, 2), visible (K,))."""
        smoother = self._smoothers.get(track_id)
        if smoother is None:
            smoother = self._smoothers[track_id] = self._new()
        return smoother.update(keypoints, scores, scale=scale)

    def drop(self, track_ids: Iterable[int]) -> None:
        """Free the smoothers of these ids (e.g. `IouTracker.dropped_ids()`)."""
        for track_id in track_ids:
            self._smoothers.pop(track_id, None)

    def retain(self, track_ids: Iterable[int]) -> None:
        """Keep only the smoothers of these ids (e.g. `IouTracker.active_ids()`)."""
        keep = set(track_ids)
        self.drop([track_id for track_id in self._smoothers if track_id not in keep])

    def reset(self) -> None:
        self._smoothers.clear()

    def __len__(self) -> int:
        return len(self._smoothers)

    def __contains__(self, track_id: int) -> bool:
        return track_id in self._smoothers
