"""Heatmap decoding: accuracy and speed of each method on Gaussians of known sub-pixel centre.

    python -m benchmarks.decode_bench [--people 512] [--batch 32] [--noise 0.05] [--seed 0]

Heatmaps are 64 x 48 x 17, one sigma-2 Gaussian (peak 1, as the official targets) per joint, centred
uniformly over the whole map, borders included. "noisy" adds Gaussian noise of std --noise to every
pixel (a network's heatmap is never a clean Gaussian). Errors are distances to the true centre in
heatmap pixels (1 heatmap px = 4 input px); "interior" keeps centres at least 3 px from the border.
Time is per person (17 joints), decoding batches of --batch people, best of --repeats.
"dark, argmax fallback" is the DARK reference as published (no refinement where its stencil does
not fit); the product's "dark" falls back to the quarter shift there.
"""

import argparse
import os
import time

import app  # noqa: F401  (first: keeps triton out, see app/__init__.py)
from benchmarks.machine import cpu_model  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from app.decode import _dark_offsets, argmax_heatmaps, decode_heatmaps  # noqa: E402

H, W, K = 64, 48, 17


def render(points: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """(N, K, 2) centres -> (N, H, W, K) float32 Gaussians with peak 1."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    dx = xs[None, :, :, None] - points[:, None, None, :, 0]
    dy = ys[None, :, :, None] - points[:, None, None, :, 1]
    d2 = dx * dx + dy * dy
    return np.exp(-d2 / (2 * sigma * sigma)).astype(np.float32)


def dark_reference(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DARK without the quarter fallback: argmax where the reference's stencil does not fit."""
    coords, scores = argmax_heatmaps(heatmaps)
    offsets, _ = _dark_offsets(heatmaps, coords, scores)
    return coords + offsets, scores


METHODS = {
    "argmax": lambda h: decode_heatmaps(h, "argmax"),
    "quarter": lambda h: decode_heatmaps(h, "quarter"),
    "dark": lambda h: decode_heatmaps(h, "dark"),
    "dark, argmax fallback": dark_reference,
}


def seconds_per_person(decode, heatmaps: np.ndarray, batch: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(heatmaps), batch):
            decode(heatmaps[i:i + batch])
        best = min(best, time.perf_counter() - start)
    return best / len(heatmaps)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    points = np.stack([rng.uniform(0, W - 1, (args.people, K)), rng.uniform(0, H - 1, (args.people, K))], axis=-1)
    border = np.minimum.reduce([points[..., 0], W - 1 - points[..., 0], points[..., 1], H - 1 - points[..., 1]])
    interior = border >= 3
    clean = render(points)
    noisy = (clean + rng.normal(0, args.noise, clean.shape)).astype(np.float32)

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; numpy {np.__version__}, opencv {cv2.__version__}")
    print(f"{args.people} people x {K} joints, {H}x{W} heatmaps, sigma 2; {interior.mean():.0%} of centres "
          f">= 3 px from the border; noise std {args.noise}; batches of {args.batch}, best of {args.repeats}")
    print()
    header = f"{'heatmaps':8} {'method':22} {'mean px':>8} {'max px':>8} {'interior mean':>13} {'us/person':>10}"
    print(header)
    print("-" * len(header))
    for name, heatmaps in (("clean", clean), ("noisy", noisy)):
        for method, decode in METHODS.items():
            coords, _ = decode(heatmaps)
            error = np.linalg.norm(coords - points, axis=-1)
            per_person = seconds_per_person(decode, heatmaps, args.batch, args.repeats)
            print(f"{name:8} {method:22} {error.mean():8.4f} {error.max():8.3f} {error[interior].mean():13.4f} "
                  f"{per_person * 1e6:10.1f}")


if __name__ == "__main__":
    main()
