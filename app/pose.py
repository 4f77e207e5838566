"""Top-down pose estimation for one frame: boxes -> crops -> one batched model call -> keypoints.

`PoseEstimator(runner, config).estimate(frame, boxes)` warps every person's crop into one batch,
normalises it, runs the model on chunks of at most `max_batch` crops (never one call per person),
decodes the heatmaps and maps the keypoints back to image pixels.

The runner is any callable `runner(batch) -> heatmaps`: batch (N, 256, 192, 3) float32 RGB,
ImageNet-normalised; heatmaps (N, 64, 48, K) float32 numpy (see app.runtime). A runner with
`input_dtype == "uint8"` gets the uint8 BGR crops instead and normalises them itself, as
app.crop.normalize does (IMAGENET_MEAN, IMAGENET_STD): on a GPU, a quarter of the bytes to upload.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from app.crop import boxes_to_center_scale, crop_transforms, finite_boxes, normalize, transform_points, warp_crops
from app.decode import DECODE_METHODS, decode_heatmaps, flip_back
from app.skeleton import NUM_KEYPOINTS, flip_index


@dataclass
class PoseConfig:
    input_size: tuple[int, int] = (256, 192)  # model input (H, W)
    padding: float = 1.25  # context around each box, as the model was trained
    flip: bool = False  # average with the prediction on the mirrored crop (about 2x the model time)
    decode: str = "dark"  # "dark", "quarter" or "argmax" (app.decode)
    max_batch: int = 32  # crops per runner call; bounds the memory of a crowded frame
    # The unbiased geometry of checkpoints trained with UDP (a converted file's JSON says "udp": true):
    # crops and keypoints mapped edge to edge, UDP's DARK, a flip test without the one-pixel shift.
    # Wrong either way costs accuracy silently (up to 3 input pixels at the crop's edges).
    udp: bool = False


@dataclass
class PoseResult:
    """Poses of N people in one frame, K joints, in the order of the boxes given."""

    keypoints: np.ndarray  # (N, K, 2) float32 x, y image pixels
    scores: np.ndarray  # (N, K) float32 heatmap peak values (0 for a non-finite box)
    heatmaps: np.ndarray | None  # (N, h, w, K) float32 when asked for, else None
    centers: np.ndarray  # (N, 2) float32 crop centres, image pixels
    sizes: np.ndarray  # (N, 2) float32 crop sizes w, h (padded, model aspect ratio), image pixels
    valid: np.ndarray  # (N,) bool: False for non-finite boxes (keypoints 0, scores 0, no model call)
    timings_ms: dict[str, float] = field(default_factory=dict)  # crop, model, decode


class PoseEstimator:
    """Runs a heatmap model on every person box of a frame.

    runner: callable (N, H, W, 3) float32 -> (N, h, w, K) float32, optionally with `.input_size`
    (H, W), which overrides `config.input_size` when present, and `.input_dtype`: "uint8" for a
    runner that takes the uint8 BGR crops and normalises them itself (module docstring).
    """

    def __init__(self, runner, config: PoseConfig | None = None):
        self.runner = runner
        self.config = config or PoseConfig()
        if self.config.decode not in DECODE_METHODS:
            raise ValueError(f"decode must be one of {DECODE_METHODS}, not {self.config.decode!r}")
        if self.config.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.input_size = tuple(getattr(runner, "input_size", None) or self.config.input_size)

    def _run(self, crops: np.ndarray) -> tuple[np.ndarray, float]:
        """Runner over chunks of at most max_batch: uint8 BGR crops (N, H, W, 3) -> (heatmaps (N, h, w, K),
        milliseconds spent normalising)."""
        chunks, normalize_ms = [], 0.0
        for start in range(0, len(crops), self.config.max_batch):
            t0 = time.perf_counter()
            chunk = crops[start:start + self.config.max_batch]
            if getattr(self.runner, "input_dtype", "float32") != "uint8":
                # Normalised one chunk at a time: the float32 batch (0.6 MB a person at 256 x 192)
                # then never holds more than max_batch people, however large the crowd.
                chunk = normalize(chunk)
            normalize_ms += (time.perf_counter() - t0) * 1000
            heatmaps = np.asarray(self.runner(chunk), np.float32)
            if self.config.flip:
                # The mirrored crops go through in their own call (the runner's batch size stays
                # max_batch); un-mirror and average as the official flip test.
                mirrored = np.asarray(self.runner(np.ascontiguousarray(chunk[:, :, ::-1])), np.float32)
                # UDP: mirroring the input mirrors the heatmap exactly, so no shift (MMPose's UDP
                # configs: shift_heatmap=False).
                unmirrored = flip_back(mirrored, flip_index(heatmaps.shape[-1]), shift=not self.config.udp)
                heatmaps = (heatmaps + unmirrored) * 0.5
            chunks.append(heatmaps)
        # One chunk (every frame with up to max_batch people) is returned as it is: a copy would cost
        # as much as the rest of the chunk loop.
        return (chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=0)), normalize_ms

    def estimate(self, frame_bgr: np.ndarray, boxes: np.ndarray, return_heatmaps: bool = False) -> PoseResult:
        """frame_bgr: uint8 (Hf, Wf, 3). boxes: (N, 4) xyxy image pixels. Returns a PoseResult of N rows."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        n = len(boxes)
        in_h, in_w = self.input_size
        centers, sizes = boxes_to_center_scale(boxes, aspect_ratio=in_w / in_h, padding=self.config.padding)
        valid = finite_boxes(boxes)
        keypoints = np.zeros((n, NUM_KEYPOINTS, 2), np.float32)
        scores = np.zeros((n, NUM_KEYPOINTS), np.float32)
        heatmaps_all = None
        timings: dict[str, float] = {}  # only the stages that ran: the HUD shows "-" for the others
        if valid.any():
            t0 = time.perf_counter()
            every = valid.all()  # the common case: no row to pick (each fancy index costs a copy)
            valid_centers, valid_sizes = (centers, sizes) if every else (centers[valid], sizes[valid])
            forward, _ = crop_transforms(valid_centers, valid_sizes, (in_h, in_w), udp=self.config.udp)
            crops = warp_crops(frame_bgr, forward, (in_h, in_w))
            t1 = time.perf_counter()
            heatmaps, normalize_ms = self._run(crops)
            t2 = time.perf_counter()
            timings["crop"] = (t1 - t0) * 1000 + normalize_ms
            timings["model"] = (t2 - t1) * 1000 - normalize_ms
            _, hm_h, hm_w, k = heatmaps.shape
            coords, peak = decode_heatmaps(heatmaps, self.config.decode, udp=self.config.udp)
            # Heatmap coordinates go back through the affine built for the heatmap size, as the
            # official transform_preds: heatmap pixel j sits on input pixel (in_w / hm_w) * j (UDP:
            # j (in_w - 1) / (hm_w - 1)).
            _, to_image = crop_transforms(valid_centers, valid_sizes, (hm_h, hm_w), udp=self.config.udp)
            if every:
                keypoints, scores = transform_points(coords, to_image), peak
            else:
                if k != keypoints.shape[1]:
                    keypoints = np.zeros((n, k, 2), np.float32)
                    scores = np.zeros((n, k), np.float32)
                keypoints[valid] = transform_points(coords, to_image)
                scores[valid] = peak
            timings["decode"] = (time.perf_counter() - t2) * 1000
            if return_heatmaps:
                heatmaps_all = np.zeros((n, hm_h, hm_w, k), np.float32)
                heatmaps_all[valid] = heatmaps
        elif return_heatmaps:
            hm_h, hm_w = in_h // 4, in_w // 4  # the SimpleBaseline output stride; no model call to ask
            heatmaps_all = np.zeros((n, hm_h, hm_w, NUM_KEYPOINTS), np.float32)
        return PoseResult(
            keypoints=keypoints, scores=scores, heatmaps=heatmaps_all,
            centers=centers.astype(np.float32), sizes=sizes.astype(np.float32), valid=valid, timings_ms=timings,
        )
