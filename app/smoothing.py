"""Temporal smoothing of one person's keypoints: a Kalman filter (the default) and a One Euro filter.

Both take a frame's keypoints (K, 2) in image pixels with their scores (K,) and return the smoothed
keypoints (K, 2) and which joints to show (K,) bool. Every length is measured in units of the
person's size (`scale`, their box diagonal in pixels), so one set of settings serves near and far
people alike; time is in frames (the defaults are tuned on a 25 fps video, docs/smoothing.md).

`KalmanBank` runs the Kalman smoother for every tracked person at once (state arrays keyed by track
id, no Python loop per person or joint); `KeypointKalman` is its one-person view. `SmootherBank`
keeps one smoother object per track id (either method) and frees those of tracks that died.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from filterpy.common import Q_discrete_white_noise

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


def _step_matrix(order: int) -> np.ndarray:
    """(order, order) constant-velocity (order 2) or constant-acceleration (order 3) step of one frame."""
    return np.array([[1.0, 1.0], [0.0, 1.0]]) if order == 2 else np.array(
        [[1.0, 1.0, 0.5], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])


def keypoint_box_diagonals(keypoints: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) diagonal in pixels of `boxes_from_keypoints`' box for each person; NaN with < 2 usable joints.

    keypoints (N, K, 2), scores (N, K). The same float32 box and float32 arithmetic as
    `person_scale`, for all people at once."""
    boxes = boxes_from_keypoints(keypoints, scores, threshold=threshold)  # (N, 4) float32
    return np.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).astype(np.float64)


def _every_row(rows: np.ndarray, count: int) -> bool:
    """Whether rows (n,) are 0 .. count - 1 in order: the state arrays themselves then serve, where
    a fancy-indexed copy in and out would cost more than a person's whole update."""
    # (A list comparison: for the handful of people of a frame it costs a twentieth of np.diff.)
    return len(rows) == count and rows.tolist() == list(range(count))


class _BlockModel:
    """One linear model ("velocity" or "acceleration") for many people: its F, Q, P and R are
    block-diagonal with one block of `b` entries per joint and axis, so the state of a row (person)
    is x (2K, b) and P (2K, b, b) and every step is a batch of b x b products.

    Equal to filterpy's KalmanFilter on the full (2bK, 2bK) matrices (what KeypointKalman ran before,
    tests/filterpy_reference.py): restarts and per-coordinate updates never couple two blocks, so the
    full P stays exactly block-diagonal. Written by hand because filterpy has no batched filter and
    its full-matrix one costs a 2bK-dimensional product per step and person."""

    def __init__(self, order: int, num_joints: int, noises: list[float]):
        self.order = order
        self.num_joints = num_joints
        self.noises = noises
        self.F = _step_matrix(order)
        self.q_unit = Q_discrete_white_noise(dim=order, dt=1.0, var=1.0)  # (b, b), times (noise * scale)^2
        self.x = np.zeros((0, 2 * num_joints, order))
        self.P = np.zeros((0, 2 * num_joints, order, order))

    def add(self, count: int) -> None:
        blocks = 2 * self.num_joints
        self.x = np.concatenate([self.x, np.zeros((count, blocks, self.order))])
        self.P = np.concatenate([self.P, np.zeros((count, blocks, self.order, self.order))])

    def delete(self, rows: np.ndarray) -> None:
        self.x, self.P = np.delete(self.x, rows, axis=0), np.delete(self.P, rows, axis=0)

    def take(self, rows: np.ndarray, copy: bool = False) -> dict:
        """The state of these rows; without `copy` it may be the model's own arrays (every row, in
        order), which later steps can change: keep a copy to hold it past the next update."""
        if not copy and _every_row(rows, len(self.x)):
            return {"x": self.x, "P": self.P}
        return {"x": self.x[rows], "P": self.P[rows]}

    def put(self, rows: np.ndarray, state: dict) -> None:
        if _every_row(rows, len(self.x)):
            self.x, self.P = state["x"], state["P"]
        else:
            self.x[rows], self.P[rows] = state["x"], state["P"]

    def predict(self, state: dict, scale: np.ndarray) -> None:
        """scale (n,): each row's person size; Q = q_unit * (noise * scale)^2."""
        q = (self.noises[0] * scale) ** 2
        state["x"] = state["x"] @ self.F.T
        state["P"] = self.F @ state["P"] @ self.F.T + self.q_unit * q[:, None, None, None]

    def restart(self, state: dict, joints: np.ndarray, positions: np.ndarray, pos_var: np.ndarray,
                vel_var: np.ndarray) -> None:
        """joints (n, K) bool restart at positions (n, K, 2), still, position variance pos_var (n, K),
        velocity (and acceleration) variance vel_var (n,), uncorrelated with everything else."""
        if not joints.any():
            return
        n, b = len(joints), self.order
        blocks = np.repeat(joints, 2, axis=1)  # (n, 2K): joint j owns blocks 2j (x) and 2j + 1 (y)
        x = np.zeros((n, 2 * self.num_joints, b))
        x[:, :, 0] = positions.reshape(n, -1)
        variances = np.repeat(vel_var[:, None, None], 2 * self.num_joints * b, axis=1).reshape(n, -1, b)
        variances[:, :, 0] = np.repeat(pos_var, 2, axis=1)
        P = variances[..., None] * np.eye(b)  # (n, 2K, b, b) diagonal blocks
        state["x"] = np.where(blocks[..., None], x, state["x"])
        state["P"] = np.where(blocks[..., None, None], P, state["P"])

    def positions(self, state: dict) -> np.ndarray:
        """(n, K, 2) estimated positions."""
        return state["x"][:, :, 0].reshape(len(state["x"]), self.num_joints, 2)

    def measure(self, state: dict, joints: np.ndarray, z: np.ndarray, variance: np.ndarray) -> None:
        """Kalman update of joints (n, K) bool with z (n, K, 2) of variance (n, K) per coordinate;
        Joseph form, as filterpy's KalmanFilter.update."""
        x, P = state["x"], state["P"]
        use = np.repeat(joints, 2, axis=1)  # (n, 2K)
        r = np.repeat(variance, 2, axis=1)  # (n, 2K)
        S = P[:, :, 0, 0] + r
        gain = P[:, :, :, 0] * (1.0 / S)[..., None]  # (n, 2K, b): P H' S^-1, S^-1 as filterpy's inv_diagonal
        innovation = np.where(use, z.reshape(len(z), -1), x[:, :, 0]) - x[:, :, 0]  # 0 where not measured
        new_x = x + gain * innovation[..., None]
        i_kh = np.eye(self.order) - gain[..., :, None] * np.eye(self.order)[0]  # (n, 2K, b, b): I - K H
        new_P = (i_kh @ P @ np.swapaxes(i_kh, -1, -2)
                 + gain[..., :, None] * r[..., None, None] * gain[..., None, :])
        state["x"] = np.where(use[..., None], new_x, x)
        state["P"] = np.where(use[..., None, None], new_P, P)


class _ImmModel:
    """The "imm" motion model for many people: two constant-velocity models (still, moving) over the
    whole person, mixed as filterpy's IMMEstimator mixes them (Blom & Bar-Shalom 1988), with the
    mode update in log space (a sudden move gives both models log-likelihoods below -745; their
    plain exponentials would both floor at the smallest float and the modes would learn nothing).

    Mixing two estimates correlates the joints (the spread of the means is a rank-one term over the
    whole state), so each model keeps a full covariance per person. The state is ordered
    [positions (C), velocities (C)] over the C = 2K coordinates (not joint by joint): F, Q and H
    then act on four (C, C) quarters of P, so the prediction is a few additions and the update
    two batched products ((D, C) by (C, C) and (D, C) by (C, D)) and a (C, C) inverse per person
    and model, instead of filterpy's (D, D) products one person at a time. Written by hand because filterpy's IMMEstimator and KalmanFilter take one
    state at a time; tests/test_smoothing_vectorised.py holds this equal to them within 1e-9.
    """

    def __init__(self, num_joints: int, noises: list[float], switch_probability: float):
        self.order = 2
        self.num_joints = num_joints
        self.noises = np.array(noises)  # (M,) one per model
        p = switch_probability
        self.M = np.array([[1 - p, p], [p, 1 - p]])  # mode transition, rows: from
        self.q_unit = Q_discrete_white_noise(dim=2, dt=1.0, var=1.0)  # [[1/4, 1/2], [1/2, 1]]
        coords = 2 * num_joints
        self.x = np.zeros((0, 2, 2 * coords))
        self.P = np.zeros((0, 2, 2 * coords, 2 * coords))
        self.mu = np.zeros((0, 2))
        diagonal, dim = np.arange(coords), 2 * coords
        self.q_index = np.concatenate([(a * coords + diagonal) * dim + b * coords + diagonal
                                       for a in range(2) for b in range(2)])  # (4C,) into a flat (D * D)
        self.q_values = np.repeat(self.q_unit.reshape(-1), coords)  # (4C,)
        # old_order[k]: index in this state of entry k of filterpy's [x, vx, y, vy] per joint layout
        c = np.arange(coords)
        self.old_order = np.stack([c, coords + c], axis=1).reshape(-1)

    def add(self, count: int) -> None:
        dim = 4 * self.num_joints
        self.x = np.concatenate([self.x, np.zeros((count, 2, dim))])
        self.P = np.concatenate([self.P, np.zeros((count, 2, dim, dim))])
        self.mu = np.concatenate([self.mu, np.full((count, 2), 0.5)])

    def delete(self, rows: np.ndarray) -> None:
        self.x, self.P, self.mu = (np.delete(a, rows, axis=0) for a in (self.x, self.P, self.mu))

    def take(self, rows: np.ndarray, copy: bool = False) -> dict:
        """As _BlockModel.take."""
        if not copy and _every_row(rows, len(self.x)):
            return {"x": self.x, "P": self.P, "mu": self.mu}
        return {"x": self.x[rows], "P": self.P[rows], "mu": self.mu[rows]}

    def put(self, rows: np.ndarray, state: dict) -> None:
        if _every_row(rows, len(self.x)):
            self.x, self.P, self.mu = state["x"], state["P"], state["mu"]
        else:
            self.x[rows], self.P[rows], self.mu[rows] = state["x"], state["P"], state["mu"]

    def predict(self, state: dict, scale: np.ndarray) -> None:
        x, P, mu = state["x"], state["P"], state["mu"]
        C = 2 * self.num_joints
        cbar = mu @ self.M  # (n, 2) predicted mode probabilities
        omega = self.M[None] * mu[:, :, None] / cbar[:, None, :]  # (n, i, j): P(was i | is j)
        mixed_x = np.swapaxes(omega, 1, 2) @ x  # (n, j, D): sum_i omega_ij x_i
        # sum_i w_ij (x_i - x0_j)(x_i - x0_j)' with two models is w_0j w_1j (x_0 - x_1)(x_0 - x_1)'; and
        # w_0j P_0 + w_1j P_1 = P_1 + w_0j (P_0 - P_1) as w_0j + w_1j = 1: the (D, D) differences and
        # the outer product are formed once for both j (two full-size products fewer).
        delta = x[:, 0] - x[:, 1]  # (n, D)
        w0, w1 = omega[:, 0, :, None, None], omega[:, 1, :, None, None]  # (n, j, 1, 1)
        mixed_P = (P[:, 1:] + w0 * (P[:, 0] - P[:, 1])[:, None]
                   + (w0 * w1) * (delta[:, :, None] * delta[:, None, :])[:, None])
        # F P F' with F = [[I, I], [0, I]] on the [positions, velocities] quarters, in place on
        # mixed_P (a new array): F adds the velocity rows to the position rows, F' then the
        # velocity columns to the position columns.
        new_P = mixed_P
        new_P[..., :C, :] += new_P[..., C:, :]
        new_P[..., :, :C] += new_P[..., :, C:]
        q = (self.noises[None] * scale[:, None]) ** 2  # (n, 2)
        # Q: q_unit[a, b] * q on the diagonal of quarter (a, b), added through one flat index.
        flat = new_P.reshape(*new_P.shape[:2], -1)
        flat[..., self.q_index] += q[..., None] * self.q_values
        new_x = mixed_x  # (a new array)
        new_x[..., :C] += new_x[..., C:]
        state["x"], state["P"] = new_x, new_P

    def restart(self, state: dict, joints: np.ndarray, positions: np.ndarray, pos_var: np.ndarray,
                vel_var: np.ndarray) -> None:
        """As _BlockModel.restart, in both models."""
        if not joints.any():
            return
        n, C = len(joints), 2 * self.num_joints
        coords = np.repeat(joints, 2, axis=1)  # (n, C): joint j owns coordinates 2j (x) and 2j + 1 (y)
        entries = np.concatenate([coords, coords], axis=1)  # (n, D): their positions and velocities
        x = np.concatenate([positions.reshape(n, C), np.zeros((n, C))], axis=1)
        variances = np.concatenate([np.repeat(pos_var, 2, axis=1), np.repeat(vel_var[:, None], C, axis=1)], axis=1)
        state["x"] = np.where(entries[:, None], x[:, None], state["x"])
        cleared = entries[:, None, :, None] | entries[:, None, None, :]
        P = np.where(cleared, 0.0, state["P"])
        diagonal = np.arange(2 * C)
        P[:, :, diagonal, diagonal] += np.where(entries, variances, 0.0)[:, None]
        state["P"] = P

    def mean(self, state: dict) -> np.ndarray:
        """(n, 4K) the IMM's combined estimate, the mode-weighted mean of the models' states, in
        this model's [positions, velocities] order."""
        return np.einsum("nm,nmd->nd", state["mu"], state["x"])

    def positions(self, state: dict) -> np.ndarray:
        """(n, K, 2) mode-weighted positions."""
        C = 2 * self.num_joints
        return (state["mu"][:, None, :] @ state["x"][:, :, :C]).reshape(len(state["x"]), self.num_joints, 2)

    def measure(self, state: dict, joints: np.ndarray, z: np.ndarray, variance: np.ndarray) -> None:
        """IMM update of the rows with any measured joint (filterpy skips the update of a person with
        none). Unmeasured coordinates enter as filterpy's call had them: a zero row of H, unit
        variance, zero innovation (their gain is exactly zero)."""
        C = 2 * self.num_joints
        if joints.all():  # every joint of everyone (the common frame): H is the identity on the positions
            rows = None
            x, P, mu = state["x"], state["P"], state["mu"]
            PHt = P[..., :C]  # (n, 2, D, C): H picks the positions
            S = P[..., :C, :C] + 0.0  # a copy
            S.reshape(*S.shape[:2], C * C)[..., ::C + 1] += np.repeat(variance, 2, axis=1)[:, None]
            innovation = z.reshape(len(z), 1, C) - x[..., :C]  # (n, 2, C)
            HP = P[..., :C, :]  # (n, 2, C, D)
        else:
            rows = np.flatnonzero(joints.any(axis=1))
            state["log_likelihood"] = np.full((len(joints), 2), np.nan)
            if len(rows) == 0:
                return
            if len(rows) == len(joints):
                x, P, mu = state["x"], state["P"], state["mu"]
            else:
                x, P, mu = state["x"][rows], state["P"][rows], state["mu"][rows]
            use = np.repeat(joints[rows], 2, axis=1)  # (n, C)
            on = use.astype(np.float64)
            r = np.where(use, np.repeat(variance[rows], 2, axis=1), 1.0)
            PHt = P[..., :C] * on[:, None, None, :]  # (n, 2, D, C): H picks the measured positions
            S = PHt[..., :C, :] * on[:, None, :, None]
            S.reshape(*S.shape[:2], C * C)[..., ::C + 1] += r[:, None]  # the diagonal, through a strided view
            measured_z = np.where(use, z[rows].reshape(len(rows), C), 0.0)
            innovation = measured_z[:, None] - x[..., :C] * on[:, None]  # (n, 2, C); 0 where not measured
            HP = P[..., :C, :] * on[:, None, :, None]  # (n, 2, C, D), = PHt' for a symmetric P
        SI = np.linalg.inv(S)
        gain = PHt @ SI  # (n, 2, D, C)
        new_x = x + (gain @ innovation[..., None])[..., 0]
        # P - K H P, made symmetric again: the same matrix as filterpy's Joseph form
        # (I - KH) P (I - KH)' + K R K' for the optimal gain, to rounding.
        new_P = P - gain @ HP
        new_P = (new_P + np.swapaxes(new_P, -1, -2)) / 2
        # Mode probabilities: Bayes' rule on the models' log-likelihoods, the larger one subtracted.
        _, log_det = np.linalg.slogdet(S)
        mahalanobis = (innovation[..., None, :] @ SI @ innovation[..., None])[..., 0, 0]  # (n, 2)
        log_likelihood = -0.5 * (mahalanobis + log_det + C * np.log(2 * np.pi))
        likelihood = np.exp(log_likelihood - log_likelihood.max(axis=1, keepdims=True))
        new_mu = (mu @ self.M) * likelihood
        new_mu /= new_mu.sum(axis=1, keepdims=True)
        if rows is None or len(rows) == len(joints):  # everyone measured (rows is then 0 .. n - 1)
            state["x"], state["P"], state["mu"] = new_x, new_P, new_mu
            state["log_likelihood"] = log_likelihood
        else:
            state["x"][rows], state["P"][rows], state["mu"][rows] = new_x, new_P, new_mu
            state["log_likelihood"][rows] = log_likelihood


class KalmanBank:
    """The Kalman smoother (KalmanConfig) for every tracked person at once, keyed by track id.

    Each person has the model and rules described in `KeypointKalman` (the one-person view of the
    same code); the bank keeps everyone's state in arrays with one row per id, so a frame is one
    batch of array operations whatever the number of people (no Python loop per person or joint).
    A person's first update creates their row; `drop`/`retain` free the rows of tracks that died.

        bank = KalmanBank(KalmanConfig())
        smoothed, visible = bank.update(track_ids, keypoints, scores, scales)  # (N, K, 2), (N, K)
        bank.retain(tracker.active_ids())

    After each update, `jumped` and `restarted` (N, K) are as KeypointKalman's, in the order of the
    ids given. People not in an update are not touched: their filters neither predict nor age.
    """

    def __init__(self, config: KalmanConfig | None = None):
        self.config = config or KalmanConfig()
        if self.config.motion_model not in MOTION_MODELS:
            raise ValueError(f"unknown motion_model {self.config.motion_model!r}: use one of {sorted(MOTION_MODELS)}")
        if self.config.motion_model == "imm" and not 0.0 < self.config.switch_probability < 1.0:
            raise ValueError("switch_probability must be between 0 and 1 (exclusive), "
                             f"got {self.config.switch_probability}")
        self.order = MOTION_MODELS[self.config.motion_model]  # state entries per axis
        self.num_joints: int | None = None
        self._rows: dict[int, int] = {}  # track id -> row of the state arrays
        self.jumped = np.zeros((0, 0), bool)
        self.restarted = np.zeros((0, 0), bool)
        self.log_likelihood = np.zeros((0, 2))
        self.last_scale = np.zeros(0)

    def _build(self, num_joints: int) -> None:
        config = self.config
        self.num_joints = num_joints
        if config.motion_model == "imm":
            self._model = _ImmModel(num_joints, [config.still_process_noise, config.process_noise],
                                    config.switch_probability)
        else:
            self._model = _BlockModel(self.order, num_joints, [config.process_noise])
        self._rows = {}
        self._alive = np.zeros((0, num_joints), bool)  # joint has a state: measured lately
        self._missed = np.zeros((0, num_joints), np.int64)  # frames since the last measurement
        self._held = np.zeros((0, num_joints, 2))  # last estimate, shown for joints hidden and unmeasured
        self._scale = np.zeros(0)  # each person's last known size (pixels)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, track_id: int) -> bool:
        return track_id in self._rows

    def ids(self) -> list[int]:
        return list(self._rows)

    def reset(self) -> None:
        """Forget everyone."""
        if self.num_joints is not None:
            self._build(self.num_joints)

    def drop(self, track_ids: Iterable[int]) -> None:
        """Free the state of these ids (unknown ids are ignored)."""
        rows = np.array([self._rows[i] for i in track_ids if i in self._rows], np.int64)
        if len(rows) == 0:
            return
        self._model.delete(rows)
        self._alive, self._missed, self._held, self._scale = (
            np.delete(a, rows, axis=0) for a in (self._alive, self._missed, self._held, self._scale))
        gone = set(rows.tolist())
        kept = [i for i, row in sorted(self._rows.items(), key=lambda item: item[1]) if row not in gone]
        self._rows = {track_id: row for row, track_id in enumerate(kept)}  # rows after np.delete

    def retain(self, track_ids: Iterable[int]) -> None:
        """Keep only the state of these ids."""
        keep = set(track_ids)
        self.drop([track_id for track_id in self._rows if track_id not in keep])

    def rows_of(self, track_ids: Iterable[int]) -> np.ndarray:
        """Row of each id in the state arrays (for readers such as app.offline)."""
        return np.array([self._rows[i] for i in track_ids], np.int64)

    @property
    def model(self):
        return self._model

    def estimates(self, track_ids: Iterable[int]) -> np.ndarray:
        """(n, K, 2) float64 estimated positions of these ids now (for the IMM, the mode-weighted mean)."""
        return self._model.positions(self._model.take(self.rows_of(track_ids)))

    def _rows_for(self, track_ids: list[int]) -> np.ndarray:
        new = [i for i in track_ids if i not in self._rows]
        if new:
            start = len(self._rows)
            self._model.add(len(new))
            K = self.num_joints
            self._alive = np.concatenate([self._alive, np.zeros((len(new), K), bool)])
            self._missed = np.concatenate([self._missed, np.zeros((len(new), K), np.int64)])
            self._held = np.concatenate([self._held, np.zeros((len(new), K, 2))])
            self._scale = np.concatenate([self._scale, np.full(len(new), self.config.default_scale)])
            self._rows.update({track_id: start + k for k, track_id in enumerate(new)})
        return self.rows_of(track_ids)

    def _choose_scale(self, rows, scales, keypoints, scores, measured) -> np.ndarray:
        """(n,) person sizes: the given one where usable, else measured from >= 2 confident joints,
        else the person's last known size."""
        given = np.isfinite(scales) & (scales > 0)  # (NaN compares False without a warning)
        if given.all():  # the pipeline's case: it always gives a size
            scale = scales
        else:  # measure only whom it is needed for
            scale = np.where(given, scales, self._scale[rows])
            ask = ~given
            with np.errstate(invalid="ignore"):
                measured_scale = keypoint_box_diagonals(keypoints[ask], np.where(measured[ask], scores[ask], 0.0),
                                                        self.config.score_threshold)
                usable = (measured[ask].sum(axis=1) >= 2) & np.isfinite(measured_scale) & (measured_scale > 0)
            scale[ask] = np.where(usable, measured_scale, scale[ask])
        self._scale[rows] = scale
        return scale

    def update(self, track_ids, keypoints: np.ndarray, scores: np.ndarray, scales=None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Filter one frame of N people.

        track_ids: N distinct ids; keypoints (N, K, 2) image pixels; scores (N, K); scales (N,)
        person sizes in pixels (box diagonals), NaN or None to measure them from the confident
        keypoints. NaN/inf joints count as missing. Returns smoothed (N, K, 2) float32 (always
        finite) and visible (N, K) bool. A hidden joint carries its raw measurement when finite,
        else its last estimate.
        """
        config = self.config
        track_ids = [int(i) for i in track_ids]
        if len(set(track_ids)) != len(track_ids):
            raise ValueError(f"each track id at most once per update, got {track_ids}")
        n = len(track_ids)
        if n == 0:  # nobody this frame: nothing changes
            joints = self.num_joints or 0
            self.jumped = self.restarted = np.zeros((0, joints), bool)
            self.log_likelihood, self.last_scale = np.zeros((0, 2)), np.zeros(0)
            return np.zeros((0, joints, 2), np.float32), np.zeros((0, joints), bool)
        keypoints = np.asarray(keypoints, np.float64).reshape(n, -1, 2)
        raw_scores = np.asarray(scores, np.float64).reshape(n, -1)
        if raw_scores.shape != keypoints.shape[:2]:
            raise ValueError(f"got {keypoints.shape[1]} keypoints but {raw_scores.shape[1]} scores")
        finite_scores = np.isfinite(raw_scores)
        finite = np.isfinite(keypoints).all(axis=2) & finite_scores
        scores = raw_scores if finite_scores.all() else np.where(finite_scores, raw_scores, 0.0)
        if self.num_joints != keypoints.shape[1]:
            if self._rows:
                raise ValueError(f"every person needs {self.num_joints} joints, got {keypoints.shape[1]}")
            self._build(keypoints.shape[1])
        if scales is None:
            scales = np.full(n, np.nan)
        elif isinstance(scales, np.ndarray):
            scales = scales.astype(np.float64).reshape(n)
        else:
            scales = np.array([np.nan if s is None else s for s in scales], np.float64).reshape(n)

        rows = self._rows_for(track_ids)
        state = self._model.take(rows)
        alive = self._alive[rows]
        missed = self._missed[rows]
        held = self._held[rows]
        measured = finite & (scores >= config.score_threshold)
        scale = self._choose_scale(rows, scales, keypoints, scores, measured)

        self._model.predict(state, scale)
        measurement_var = (config.measurement_noise * scale[:, None] / np.maximum(scores, config.score_threshold)) ** 2
        velocity_var = (config.initial_velocity * scale) ** 2
        restarted = ~alive
        # Joints without a state stay parked, still, with a bounded variance however long they are
        # away: they restart from their next measurement anyway.
        if not alive.all():
            self._model.restart(state, ~alive, held, np.repeat(velocity_var[:, None], alive.shape[1], axis=1),
                                velocity_var)

        predicted = self._model.positions(state)
        tracked = measured & alive
        offset = keypoints - predicted
        jump = np.sqrt((offset * offset).sum(axis=2))  # np.linalg.norm's own formula, without its wrapper
        jumped = tracked & (jump > config.gate * scale[:, None])
        whole = jumped.any(axis=1) & (jumped.sum(axis=1) >= config.track_reset_fraction * tracked.sum(axis=1))
        jumped = np.where(whole[:, None], tracked, jumped)
        self.jumped = jumped  # (N, K) joints restarted by the gate this frame, for callers and tests
        fresh = measured & (~alive | jumped)
        self._model.restart(state, fresh, keypoints, measurement_var, velocity_var)
        self.restarted = restarted | fresh
        self._model.measure(state, measured & ~fresh, keypoints, measurement_var)
        # (N, 2) each IMM model's measurement log-likelihood this frame (NaN: no update, or one model)
        self.log_likelihood = state["log_likelihood"] if "log_likelihood" in state else np.full((n, 2), np.nan)

        missed = np.where(measured, 0, np.where(alive, missed + 1, missed))
        alive = alive | measured
        alive &= ~(missed > config.max_predict)

        smoothed = self._model.positions(state)
        hidden_value = np.where(finite[..., None], keypoints, held)
        smoothed = np.where(alive[..., None] & np.isfinite(smoothed), smoothed, hidden_value)
        held = np.where(alive[..., None], smoothed, held)
        self._model.put(rows, state)
        self._alive[rows], self._missed[rows], self._held[rows] = alive, missed, held
        self.last_scale = scale  # (N,) the sizes this update used (app.offline rebuilds Q from them)
        return smoothed.astype(np.float32), alive.copy()


class KeypointKalman:
    """Kalman filter over one person's K joints: a `KalmanBank` holding that one person.

    The state is [x, vx, y, vy] per joint (4K; [x, vx, ax, y, vy, ay] with
    motion_model="acceleration"), with block-diagonal F, Q, P and diagonal R, so one model computes
    exactly what K separate per-joint filters would. motion_model="imm" (the default) runs two such
    models, a still and a moving one, mixed as filterpy's IMMEstimator mixes them, with one mode
    for the whole person. (Before issue 17 this class ran filterpy's KalmanFilter and IMMEstimator
    per person; tests/filterpy_reference.py keeps that code, and the tests hold the two equal.)

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
        self._bank = KalmanBank(config)
        self.config = self._bank.config
        self._order = self._bank.order
        self.jumped = np.zeros(0, bool)
        self.restarted = np.zeros(0, bool)
        self.last_q: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the person: the next update starts every joint at its measurement."""
        self._bank = KalmanBank(self.config)

    def _state(self) -> dict:
        return self._bank.model.take(self._bank.rows_of([0]))

    @property
    def x(self) -> np.ndarray:
        """(4K,) or (6K,) state estimate: the mode-weighted mean for "imm"."""
        state = self._state()
        if isinstance(self._bank.model, _ImmModel):
            return self._bank.model.mean(state)[0][self._bank.model.old_order]  # filterpy's layout
        return state["x"][0].reshape(-1)

    @property
    def P(self) -> np.ndarray:
        """State covariance of a single-model filter (the one an RTS pass smooths)."""
        if isinstance(self._bank.model, _ImmModel):
            raise ValueError("P of the IMM mixture is not the covariance of one linear model")
        return scipy.linalg.block_diag(*self._state()["P"][0])

    @property
    def F(self) -> np.ndarray:
        return np.kron(np.eye(2 * self._bank.num_joints), _step_matrix(self._order))

    @property
    def block_size(self) -> int:
        """State entries per joint (both axes): joint j owns entries [j * block_size, (j + 1) * block_size)."""
        return 2 * self._order

    @property
    def mode_probabilities(self) -> np.ndarray:
        """(2,) probabilities of [still, moving] for "imm"; (1,) [1.0] for one model."""
        if not isinstance(self._bank.model, _ImmModel):
            return np.array([1.0])
        return self._state()["mu"][0].copy()

    def update(self, keypoints: np.ndarray, scores: np.ndarray, scale: float | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Filter one frame of one person.

        keypoints: (K, 2) image pixels; scores: (K,); scale: the person's size in pixels (box
        diagonal); None measures it from the confident keypoints. NaN/inf joints count as missing.
        Returns smoothed (K, 2) float32 (always finite) and visible (K,) bool. A hidden joint
        carries its raw measurement when finite, else its last estimate.
        """
        keypoints = np.asarray(keypoints, np.float64).reshape(-1, 2)
        scores = np.asarray(scores, np.float64).reshape(-1)
        if len(scores) != len(keypoints):
            raise ValueError(f"got {len(keypoints)} keypoints but {len(scores)} scores")
        if self._bank.num_joints is not None and self._bank.num_joints != len(keypoints):
            self._bank = KalmanBank(self.config)  # a different skeleton: start over
        smoothed, visible = self._bank.update([0], keypoints[None], scores[None], [scale])
        self.jumped, self.restarted = self._bank.jumped[0], self._bank.restarted[0]
        self.log_likelihood = self._bank.log_likelihood[0]  # (2,) for "imm": see KalmanBank
        noise = self.config.process_noise
        q_unit = Q_discrete_white_noise(dim=self._order, dt=1.0, var=1.0, block_size=2 * len(keypoints))
        self.last_q = q_unit * (noise * self._bank.last_scale[0]) ** 2
        return smoothed[0], visible[0]


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
