"""Alternatives tried for the host hot path that the product does not use, side by side with what it
does use (issue 17, docs/benchmarks.md "Host ceiling, third pass"):

    python -m benchmarks.host_alternatives

- the IMM's two 34 x 34 inverses and log-determinants per person (app.smoothing._ImmModel.measure):
  numpy's inv + slogdet (used) against torch's Cholesky, scipy's batched inv (no log-determinant)
  and LAPACK potrf/potri called per matrix from Python, for 1 and 5 people;
- normalising uint8 crops (app.crop.normalize): cv2.LUT (used) against float32 arithmetic over
  rows of W * 3 values (bit for bit the same numbers), 1 person;
- converting the crops' footprint to BGRA (app.crop.warp_crops): one cv2.cvtColor call (used)
  against bands of at most 65,536 pixels, which OpenCV runs on the calling thread; in CPU time
  and in wall time, over 100 real frames of dancer.avi (not in cache, as a video's new frame).
Microseconds per call, median of --repeats timings of --number calls.
"""

import argparse
import statistics
import time
from pathlib import Path

import app  # noqa: F401  (first: sets OpenCV's thread pool to sleep, as the product runs it)
import cv2
import numpy as np
import scipy.linalg
from scipy.linalg import lapack

from app.crop import IMAGENET_MEAN, IMAGENET_STD, _footprint, boxes_to_center_scale, crop_transforms, normalize
from benchmarks.machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT.parent / "shared" / "assets" / "videos" / "dancer.avi"


def timed(fn, number: int, repeats: int, clock=time.perf_counter) -> float:
    """Median over repeats of the mean microseconds of `number` calls of fn()."""
    for _ in range(min(number, 50)):
        fn()
    runs = []
    for _ in range(repeats):
        start = clock()
        for _ in range(number):
            fn()
        runs.append((clock() - start) / number * 1e6)
    return statistics.median(runs)


def innovation_covariances(people: int, seed: int = 0) -> np.ndarray:
    """(people, 2, 34, 34) symmetric positive definite matrices, as the IMM's S."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(people, 2, 34, 34))
    return a @ np.swapaxes(a, -1, -2) + 34 * np.eye(34)


def numpy_inverse(S):
    return np.linalg.inv(S), np.linalg.slogdet(S)[1]


def torch_inverse(S):
    import torch

    L, _ = torch.linalg.cholesky_ex(torch.from_numpy(S))
    return torch.cholesky_inverse(L).numpy(), (2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)).numpy()


def lapack_inverse(S):
    flat = S.reshape(-1, *S.shape[-2:])
    inverse, log_det = np.empty_like(flat), np.empty(len(flat))
    for i, matrix in enumerate(flat):  # LAPACK takes one matrix a call
        factor, _ = lapack.dpotrf(matrix, lower=1, clean=0)
        log_det[i] = 2 * np.log(factor.diagonal()).sum()
        inverse[i], _ = lapack.dpotri(factor, lower=1)
    inverse = np.tril(inverse) + np.swapaxes(np.tril(inverse, -1), -1, -2)
    return inverse.reshape(S.shape), log_det.reshape(S.shape[:-2])


def arithmetic_normalize(crops):
    n, h, w, c = crops.shape
    rgb = cv2.cvtColor(np.ascontiguousarray(crops).reshape(n * h, w, c), cv2.COLOR_BGR2RGB)
    x = rgb.reshape(n * h, w * c).astype(np.float32)
    x /= np.float32(255.0)
    x -= np.tile(IMAGENET_MEAN, w)
    x /= np.tile(IMAGENET_STD, w)
    return x.reshape(n, h, w, c)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"machine: {cpu_model()}, OpenCV threads {cv2.getNumThreads()}")
    rows = []

    for people in (1, 5):
        S = innovation_covariances(people)
        reference = numpy_inverse(S)
        for name, fn in [("numpy inv + slogdet (used)", numpy_inverse), ("torch cholesky_inverse", torch_inverse),
                         ("scipy inv (no log-det)", lambda S: (scipy.linalg.inv(S, check_finite=False), None)),
                         ("LAPACK potrf/potri per matrix", lapack_inverse)]:
            inverse, _ = fn(S)
            assert np.allclose(inverse, reference[0], rtol=1e-9, atol=1e-15), name
            label = f"IMM inverse, {people} {'person' if people == 1 else 'people'}"
            rows.append((label, name, timed(lambda: fn(S), args.number, args.repeats)))

    crops = np.random.default_rng(0).integers(0, 256, (1, 256, 192, 3), dtype=np.uint8)
    assert np.array_equal(normalize(crops), arithmetic_normalize(crops))
    rows.append(("normalize, 1 person", "cv2.LUT (used)", timed(lambda: normalize(crops), args.number, args.repeats)))
    rows.append(("normalize, 1 person", "float32 arithmetic", timed(lambda: arithmetic_normalize(crops),
                                                                     args.number, args.repeats)))

    if VIDEO.exists():
        capture = cv2.VideoCapture(str(VIDEO))
        frames = [frame for ok, frame in iter(capture.read, (False, None)) if ok][:100]
        capture.release()
        centers, sizes = boxes_to_center_scale(np.array([[150, 40, 380, 480]], np.float32))
        forward, _ = crop_transforms(centers, sizes, (256, 192))
        x0, y0, x1, y1 = _footprint(forward, (256, 192), frames[0].shape[:2])
        bgra = np.empty((*frames[0].shape[:2], 4), np.uint8)
        band = max(1, 65536 // (x1 - x0))

        def whole():
            for frame in frames:
                cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_BGR2BGRA, dst=bgra[y0:y1, x0:x1])

        def banded():
            for frame in frames:
                for top in range(y0, y1, band):
                    bottom = min(top + band, y1)
                    cv2.cvtColor(frame[top:bottom, x0:x1], cv2.COLOR_BGR2BGRA, dst=bgra[top:bottom, x0:x1])

        for name, fn in [("one call (used)", whole), ("bands of 65,536 px", banded)]:
            label = f"footprint to BGRA, {(x1 - x0) * (y1 - y0)} px"
            rows.append((label + ", CPU", name, timed(fn, 1, args.repeats, time.process_time) / len(frames)))
            rows.append((label + ", wall", name, timed(fn, 1, args.repeats) / len(frames)))
    else:
        print(f"(no {VIDEO}: the footprint rows are left out)")

    print(f"\n| what | how | us per call |\n|---|---|---:|")
    for what, how, us in rows:
        print(f"| {what} | {how} | {us:.1f} |")


if __name__ == "__main__":
    main()
