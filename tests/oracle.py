"""Test double for the pose network: renders the ground truth as the heatmaps a perfect model would give.

`OracleRunner` stands in for the runner of one image. It knows the ground-truth keypoints and the boxes
the estimator is given, recomputes each crop's affine through the same public functions the estimator
uses (app.crop; `udp=True`: a model trained with UDP's geometry), and renders sigma-2 Gaussians (peak
1, as the official target generator) where the ground truth falls in heatmap coordinates. Everything
else — warping, normalising, batching, flip, decoding, mapping back, evaluating — is the real code, so
a perfect "model" must score near AP 1.

Mirrored batches: when a batch equals the previous batch flipped on the width axis, the oracle renders
the mirrored ground truth (input pixel x -> W_in - 1 - x, the pixel-exact image flip, with left and
right joints swapped by `mirror_index`), which is what a real network sees in the flip test.
"""

import numpy as np

from app.crop import boxes_to_center_scale, crop_transforms, finite_boxes, transform_points
from app.pose import PoseEstimator
from app.skeleton import flip_index


def render_gaussians(points: np.ndarray, visible: np.ndarray, size=(64, 48), sigma: float = 2.0) -> np.ndarray:
    """Heatmaps (N, H, W, K) float32 with an unnormalised (peak 1) Gaussian at each visible point.

    points: (N, K, 2) x, y in heatmap pixels (sub-pixel, may lie outside the map). visible: (N, K) bool;
    invisible joints get an all-zero map.
    """
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    dx = xs[None, :, :, None] - points[:, None, None, :, 0]
    dy = ys[None, :, :, None] - points[:, None, None, :, 1]
    maps = np.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
    return (maps * visible[:, None, None, :]).astype(np.float32)


class OracleRunner:
    """Runner double for one image.

    keypoints: (N, K, 3) COCO ground truth x, y, v (v = 0: not labelled, rendered as nothing).
    boxes: (N, 4) xyxy, the same boxes the estimator gets (rows with non-finite boxes are skipped, as
    the estimator skips them). mirror_index: the left/right swap of the double's world on mirrored
    batches (a wrong one proves the flip test can fail).
    Calls are served in order: each normal batch is the next rows; a mirrored batch the previous rows.
    `calls` records (batch size, mirrored) of every call.
    """

    def __init__(self, keypoints, boxes, input_size=(256, 192), heatmap_size=(64, 48), padding=1.25,
                 sigma=2.0, mirror_index=None, udp=False):
        keypoints = np.asarray(keypoints, np.float64).reshape(len(keypoints), -1, 3)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        self.input_size = tuple(input_size)
        self.heatmap_size = tuple(heatmap_size)
        self.sigma = sigma
        self.mirror_index = list(flip_index(keypoints.shape[1]) if mirror_index is None else mirror_index)
        in_h, in_w = self.input_size
        centers, sizes = boxes_to_center_scale(boxes, aspect_ratio=in_w / in_h, padding=padding)
        self.udp = udp
        to_heatmap, _ = crop_transforms(centers, sizes, self.heatmap_size, udp=udp)
        keep = finite_boxes(boxes)
        self._targets = transform_points(keypoints[..., :2], to_heatmap).astype(np.float64)[keep]
        self._visible = (keypoints[..., 2] > 0)[keep]
        self._next = 0
        self._last_input = None
        self._last_rows = slice(0, 0)
        self.calls: list[tuple[int, bool]] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        in_h, in_w = self.input_size
        assert batch.dtype == np.float32 and batch.shape[1:] == (in_h, in_w, 3), (batch.dtype, batch.shape)
        last = self._last_input
        mirrored = last is not None and last.shape == batch.shape and np.array_equal(batch, last[:, :, ::-1])
        if mirrored:
            rows = self._last_rows
        else:
            if self._next >= len(self._targets):  # a new estimate() on the same image starts over
                self._next = 0
            rows = slice(self._next, self._next + len(batch))
            self._next += len(batch)
        targets = self._targets[rows].copy()
        visible = self._visible[rows]
        assert len(targets) == len(batch), "oracle got more crops than it has people"
        if mirrored:
            # heatmap pixel j sits on input pixel stride * j (UDP: the ends of both rows line up)
            stride = (in_w - 1) / (self.heatmap_size[1] - 1) if self.udp else in_w / self.heatmap_size[1]
            targets[..., 0] = ((in_w - 1) - targets[..., 0] * stride) / stride
            targets = targets[:, self.mirror_index]
            visible = visible[:, self.mirror_index]
        self._last_input = np.array(batch, copy=True)
        self._last_rows = rows
        self.calls.append((len(batch), mirrored))
        return render_gaussians(targets, visible, self.heatmap_size, self.sigma)


class OracleEstimator:
    """Estimator double for a whole COCO set: one real PoseEstimator per image, driven by an OracleRunner.

    `app.evaluate.evaluate` only calls `estimate(frame, boxes)`; the ground truth of the image is found
    from the boxes it is given (ground-truth boxes are distinct per image), then the REAL PoseEstimator
    does all the work with the oracle as its model (trained with UDP's geometry when config.udp).
    truth: {image_id: (keypoints (M, K, 3), boxes (M, 4) xyxy)}.
    """

    def __init__(self, truth: dict, config, mirror_index=None):
        self.config = config
        self._truth = truth
        self._mirror_index = mirror_index
        self.runner_calls: list[tuple[int, bool]] = []

    def _find(self, boxes: np.ndarray):
        boxes = np.asarray(boxes, np.float32)
        for keypoints, gt_boxes in self._truth.values():
            if gt_boxes.shape == boxes.shape and np.allclose(gt_boxes, boxes, atol=1e-3):
                return keypoints
        raise AssertionError("oracle: boxes that match no image's ground truth")

    def estimate(self, frame_bgr, boxes, return_heatmaps=False):
        runner = OracleRunner(self._find(boxes), boxes, mirror_index=self._mirror_index, udp=self.config.udp)
        result = PoseEstimator(runner, self.config).estimate(frame_bgr, boxes, return_heatmaps)
        self.runner_calls.extend(runner.calls)
        return result
