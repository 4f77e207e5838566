"""The live Kalman smoother as it was before issue 17: one filterpy KalmanFilter (and IMMEstimator)
per person, updated person by person. The reference that app.smoothing.KalmanBank, vectorised
across people and joints, must equal within 1e-9 (tests/test_smoothing.py)."""

import numpy as np
from filterpy.common import Q_discrete_white_noise, inv_diagonal
from filterpy.kalman import IMMEstimator, KalmanFilter

from app.smoothing import MOTION_MODELS, KalmanConfig, _clean, person_scale


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


class ReferenceKeypointKalman:
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
