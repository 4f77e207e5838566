"""Heatmap decoding: accuracy and speed of each method on Gaussians of known sub-pixel centre.

    python -m benchmarks.decode_bench [--people 512] [--batch 32] [--noise 0.05] [--seed 0]

Heatmaps are 64 x 48 x 17, one sigma-2 Gaussian per joint, centred uniformly over the whole map,
borders included:
- clean: peak 1, as the official targets;
- noisy: clean + Gaussian noise of std --noise on every pixel (a network's heatmap is never clean);
- weak: peak height uniform in 0.1-0.3 + noise of std 0.03 (an unsure joint: occluded, blurred).
Errors are distances to the true centre in heatmap pixels (1 heatmap px = 4 input px); "interior"
keeps centres at least 3 px from the border. Time is per person (17 joints), decoding batches of
--batch people, best of --repeats.

Methods: "argmax", "quarter" and "dark" are the product's (app.decode: the official rules; dark's
off-map steps clipped). The others are variants measured to decide what the product offers, built here
from app.decode's parts:
- "quarter, per axis": the quarter shift on each axis where that axis has both neighbours (what the
  project did before it followed the official both-axes-or-neither rule);
- "dark, guarded": a step only where the log-Hessian is negative definite and the step is at most 1 px
  on each axis, else the quarter shift (the project's DARK before it followed MMPose);
- "dark, quarter at border": the official DARK, and the quarter shift where its stencil does not fit.

What it showed (2026-11-30, AMD EPYC 2 cores under load average 10, default arguments; README
"Decoding"): the official DARK is 2-3x more precise than the quarter shift on every kind of map; the
project's old guarded DARK is worse than the official one on weak peaks (mean 0.55 against 0.36 px),
as issue 11 found; the quarter shift at DARK's border gains 0.004-0.007 px on the mean (0.03 input
px), too little to offer a second DARK, so the product has only the official one.
"""

import argparse
import os
import time

import app  # noqa: F401  (first: keeps triton out, see app/__init__.py)
from benchmarks.machine import cpu_model  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from app.decode import (  # noqa: E402
    _blur_hwnk, _dark_offsets, _quarter_offsets, argmax_heatmaps, clip_to_map, decode_heatmaps,
)

H, W, K = 64, 48, 17


def render(points: np.ndarray, heights: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """(N, K, 2) centres, (N, K) peak heights -> (N, H, W, K) float32 Gaussians."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    dx = xs[None, :, :, None] - points[:, None, None, :, 0]
    dy = ys[None, :, :, None] - points[:, None, None, :, 1]
    d2 = dx * dx + dy * dy
    return (np.exp(-d2 / (2 * sigma * sigma)) * heights[:, None, None, :]).astype(np.float32)


def quarter_per_axis(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    coords, scores = argmax_heatmaps(heatmaps)
    maps = np.pad(heatmaps, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")  # neighbours of border pixels
    n, k = coords.shape[:2]
    x, y = coords[..., 0].astype(int) + 1, coords[..., 1].astype(int) + 1
    people, joints = np.arange(n)[:, None], np.arange(k)[None, :]
    dx = maps[people, y, x + 1, joints] - maps[people, y, x - 1, joints]
    dy = maps[people, y + 1, x, joints] - maps[people, y - 1, x, joints]
    inside_x = (x - 1 >= 1) & (x - 1 <= W - 2)
    inside_y = (y - 1 >= 1) & (y - 1 <= H - 2)
    offsets = np.stack([np.sign(dx) * inside_x, np.sign(dy) * inside_y], axis=-1) * 0.25
    return coords + offsets.astype(np.float32), scores


def dark_guarded(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step only at a true maximum of the log (dxx < 0, det > 0) and when it is under 1 px per axis."""
    coords, scores = argmax_heatmaps(heatmaps)
    n, h, w, k = heatmaps.shape
    blurred = _blur_hwnk(heatmaps)
    ratio = scores / np.where(blurred.max(axis=(0, 1)) > 0, blurred.max(axis=(0, 1)), np.inf)
    x, y = coords[..., 0].astype(int), coords[..., 1].astype(int)
    inside = (x >= 2) & (x <= w - 3) & (y >= 2) & (y <= h - 3)
    people, joints = np.arange(n)[:, None], np.arange(k)[None, :]

    def log_at(dx, dy):
        values = blurred[np.clip(y + dy, 0, h - 1), np.clip(x + dx, 0, w - 1), people, joints] * ratio
        return np.log(np.maximum(values.astype(np.float64), 1e-10))

    c = log_at(0, 0)
    gx, gy = 0.5 * (log_at(1, 0) - log_at(-1, 0)), 0.5 * (log_at(0, 1) - log_at(0, -1))
    dxx = 0.25 * (log_at(2, 0) - 2 * c + log_at(-2, 0))
    dyy = 0.25 * (log_at(0, 2) - 2 * c + log_at(0, -2))
    dxy = 0.25 * (log_at(1, 1) - log_at(1, -1) - log_at(-1, 1) + log_at(-1, -1))
    det = dxx * dyy - dxy * dxy
    stepped = inside & (dxx < -1e-12) & (det > 1e-12)
    safe = np.where(stepped, det, 1.0)
    offsets = np.stack([-(dyy * gx - dxy * gy) / safe, -(dxx * gy - dxy * gx) / safe], axis=-1)
    stepped &= (np.abs(offsets) <= 1.0).all(axis=-1)
    fallback = _quarter_offsets(heatmaps, coords)
    return coords + np.where(stepped[..., None], offsets, fallback).astype(np.float32), scores


def dark_quarter_at_border(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    coords, scores = argmax_heatmaps(heatmaps)
    offsets, stepped = _dark_offsets(heatmaps, coords, scores)
    x, y = coords[..., 0], coords[..., 1]
    no_stencil = ~((x > 1) & (x < W - 2) & (y > 1) & (y < H - 2))
    offsets = np.where(no_stencil[..., None], _quarter_offsets(heatmaps, coords), offsets)
    return clip_to_map(coords + offsets, (H, W)), scores


METHODS = {
    "argmax": lambda h: decode_heatmaps(h, "argmax"),
    "quarter": lambda h: decode_heatmaps(h, "quarter"),
    "quarter, per axis": quarter_per_axis,
    "dark": lambda h: decode_heatmaps(h, "dark"),
    "dark, guarded": dark_guarded,
    "dark, quarter at border": dark_quarter_at_border,
    # What a model trained with UDP decodes with (MMPose 1.x's refine_keypoints_dark_udp); on these targets, rendered
    # with the SimpleBaseline geometry, only its time and its border behaviour compare.
    "dark, UDP's": lambda h: decode_heatmaps(h, "dark", udp=True),
}


def seconds_per_person(decode, heatmaps: np.ndarray, batch: int, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds per person, best of `repeats`. CPU time (this thread's) is what a loaded,
    shared machine distorts least."""
    best = best_cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        for i in range(0, len(heatmaps), batch):
            decode(heatmaps[i:i + batch])
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.thread_time() - start_cpu)
    return best / len(heatmaps), best_cpu / len(heatmaps)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    shape = (args.people, K)
    points = np.stack([rng.uniform(0, W - 1, shape), rng.uniform(0, H - 1, shape)], axis=-1)
    border = np.minimum.reduce([points[..., 0], W - 1 - points[..., 0], points[..., 1], H - 1 - points[..., 1]])
    interior = border >= 3
    clean = render(points, np.ones(shape))
    noisy = (clean + rng.normal(0, args.noise, clean.shape)).astype(np.float32)
    weak = (render(points, rng.uniform(0.1, 0.3, shape)) + rng.normal(0, 0.03, clean.shape)).astype(np.float32)

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"numpy {np.__version__}, opencv {cv2.__version__}")
    print(f"{args.people} people x {K} joints, {H}x{W} heatmaps, sigma 2; {interior.mean():.0%} of centres "
          f">= 3 px from the border; noisy: noise std {args.noise}; weak: peak 0.1-0.3, noise std 0.03; "
          f"batches of {args.batch}, best of {args.repeats}")
    print()
    header = (f"{'heatmaps':8} {'method':24} {'mean px':>8} {'max px':>8} {'interior mean':>13} "
              f"{'border mean':>11} {'us/person':>10} {'CPU us/person':>13}")
    print(header)
    print("-" * len(header))
    for name, heatmaps in (("clean", clean), ("noisy", noisy), ("weak", weak)):
        for method, decode in METHODS.items():
            coords, _ = decode(heatmaps)
            error = np.linalg.norm(coords - points, axis=-1)
            per_person, cpu_per_person = seconds_per_person(decode, heatmaps, args.batch, args.repeats)
            print(f"{name:8} {method:24} {error.mean():8.4f} {error.max():8.3f} {error[interior].mean():13.4f} "
                  f"{error[~interior].mean():11.4f} {per_person * 1e6:10.1f} {cpu_per_person * 1e6:13.1f}")


if __name__ == "__main__":
    main()
