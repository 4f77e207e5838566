"""Trained pose weights: convert PyTorch checkpoints to Keras, download the MMPose ones, load.

The command line, `python -m app.weights` (see the package's docstring):

    python -m app.weights download [NAME]        # an MMPose model-zoo checkpoint, verified, converted
    python -m app.weights download NAME --accept-unverified  # one whose sha256 does not match its name
    python -m app.weights convert SRC.pth [DST]  # a checkpoint you already have
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from app.errors import WeightsError, run_command
from app.native_noise import native_noise_filtered
from app.weights.conversion import convert, input_size_problem
from app.weights.files import KERAS_SUFFIX, weights_dir
from app.weights.networks import network_label
from app.weights.sidecar import read_sidecar
from app.weights.zoo import ACCEPT_FLAG, DEFAULT_CHECKPOINT, MODEL_ZOO, download


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected HxW such as 256x192, got {text!r}")
    return int(match.group(1)), int(match.group(2))  # checked in _main, for a one-line error


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser = argparse.ArgumentParser(prog="python -m app.weights", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    convert_cmd = commands.add_parser("convert", parents=[common], help="convert a PyTorch checkpoint to Keras")
    convert_cmd.add_argument("src", type=Path, help="checkpoint (.pth / .pth.tar), Microsoft or MMPose layout")
    convert_cmd.add_argument("dst", type=Path, nargs="?", help=f"output *{KERAS_SUFFIX} (default: weights/<stem>{KERAS_SUFFIX})")
    convert_cmd.add_argument("--input-size", type=_size, help="HxW the model is built for (default: from the file name, else 256x192)")
    convert_cmd.add_argument("--joints", type=int, help="refuse a checkpoint with another number of joints")
    convert_cmd.add_argument("--overwrite", action="store_true", help="replace an existing converted model at DST")
    convert_cmd.add_argument("--udp", action=argparse.BooleanOptionalAction, default=None,
                             help="the checkpoint was trained with UDP's unbiased geometry (default: when its "
                                  "file name says udp, as MMPose names them); crops and decoding then follow it")

    zoo = ", ".join(f"{name} (AP {entry.coco_ap:.3f})" for name, entry in MODEL_ZOO.items())
    download_cmd = commands.add_parser(
        "download", parents=[common], help="download an MMPose checkpoint, verify and convert it",
        description=f"COCO val2017 AP: {zoo}",
    )
    download_cmd.add_argument("name", nargs="?", default=DEFAULT_CHECKPOINT, choices=list(MODEL_ZOO))
    download_cmd.add_argument("--url", help="base URL to download from instead of download.openmmlab.com")
    download_cmd.add_argument("--dir", type=Path, default=weights_dir(), help="folder for the checkpoint and the converted files")
    download_cmd.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the server")
    download_cmd.add_argument(ACCEPT_FLAG, action="store_true",
                              help="convert the file even if its sha256 does not start with the 8 hex characters in its name")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter is no error of ours
    args = _parser().parse_args(argv)
    return run_command(lambda: _main(args), args.debug)


def _main(args: argparse.Namespace) -> int:
    if args.command == "convert":
        if args.input_size and (problem := input_size_problem(args.input_size)):
            raise WeightsError(f"--input-size {args.input_size[0]}x{args.input_size[1]}: {problem}")
        with native_noise_filtered(enabled=not args.debug):
            path = convert(args.src, args.dst, input_size=args.input_size, num_joints=args.joints,
                           overwrite=args.overwrite, udp=args.udp)
    else:
        with native_noise_filtered(enabled=not args.debug):
            path = download(args.name, args.dir, base_url=args.url, timeout=args.timeout,
                            accept_unverified=args.accept_unverified)
    info = read_sidecar(path)
    height, width = info["input_size"]
    udp = ", UDP" if info["udp"] else ""
    print(f"wrote {path} ({network_label(info)}, {info['num_joints']} joints, {height}x{width}{udp})")
    return 0

