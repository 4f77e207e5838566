"""Which arithmetic the pose model runs in, and which CPU runtime `--runtime auto` takes: pure
functions of the CPU's flags and of measured timings, so they are tested without the hardware.

    --precision auto|f32|bf16|f16      (long names float32, bfloat16, float16 are accepted too)

On a CPU "auto" is float32: bfloat16 moves heatmaps by about 1.2 % of their maximum (random weights)
and no trained weights here have measured what that costs in AP. bfloat16 or float16 asked of a CPU
that has no instructions for it would be emulated, slower than float32: `cpu_precision` refuses it
with one line, and the runner runs float32.
"""

import platform
from pathlib import Path

PRECISIONS = ("auto", "f32", "bf16", "f16")  # what --precision offers
LONG_NAMES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}
SHORT_NAMES = {long: short for short, long in LONG_NAMES.items()}

# /proc/cpuinfo flags that mean the CPU multiplies in that format in hardware. x86: AVX512_BF16
# (AMD Zen 4+, Intel Cooper Lake+) and AMX (Intel Sapphire Rapids+); AVX512_FP16 / AMX_FP16 for
# float16. Arm (the "Features" line): bf16 (Armv8.6) and asimdhp (half-precision vector arithmetic).
NATIVE_FLAGS = {
    "bfloat16": ("avx512_bf16", "amx_bf16", "bf16"),
    "float16": ("avx512_fp16", "amx_fp16", "asimdhp"),
}


def parse_precision(text: str) -> str:
    """"auto", "f32"/"float32", "bf16"/"bfloat16", "f16"/"float16" -> "auto" or the long name.
    Raises ValueError naming the choices for anything else."""
    key = str(text).strip().lower()
    if key == "auto":
        return "auto"
    if key in LONG_NAMES:
        return LONG_NAMES[key]
    if key in SHORT_NAMES:
        return key
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {text!r}")


def requested_precision(precision: str = "auto", half: bool = False) -> str:
    """--precision with --half folded in (--half is the alias of f16; it loses to an explicit
    --precision other than auto)."""
    precision = parse_precision(precision)
    return "float16" if half and precision == "auto" else precision


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags, lower case: Linux's /proc/cpuinfo ("flags" on x86, "Features" on
    Arm). Elsewhere (macOS, Windows) none: precision "auto" and a refused bf16/f16 then both mean
    float32, which is never slower than emulation."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.lower().split())
    return frozenset()


def native_precisions(flags) -> frozenset[str]:
    """Precisions this CPU runs in hardware: always float32, plus bfloat16 / float16 per NATIVE_FLAGS."""
    flags = set(flags)
    return frozenset({"float32"} | {name for name, needs in NATIVE_FLAGS.items() if flags & set(needs)})


def native_flag(precision: str, flags) -> str | None:
    """The flag that makes `precision` native here (for messages), or None."""
    return next((flag for flag in NATIVE_FLAGS.get(precision, ()) if flag in set(flags)), None)


def cpu_precision(requested: str, flags, runtime: str) -> tuple[str, str]:
    """What a CPU runner runs for `requested` ("auto" or a long name): (precision, note).

    runtime: "openvino" or "keras" (float32, bfloat16 and float16 kernels) or "onnx" (ONNX Runtime's
    CPU kernels are float32 only). note: "" or one line for the user when the request is not honoured.
    """
    requested = parse_precision(requested)
    if requested in ("auto", "float32"):
        return "float32", ""
    # Both spellings of float16: the user may have typed either (requested_precision folds --half in).
    option = "--half / --precision f16" if requested == "float16" else f"--precision {SHORT_NAMES[requested]}"
    if requested not in native_precisions(flags):
        wanted = " or ".join(NATIVE_FLAGS[requested][:2])
        return "float32", (f"{option}: this CPU has no {wanted}, so {requested} would be emulated "
                           f"(slower than float32); running float32")
    if runtime == "onnx":
        return "float32", (f"{option}: ONNX Runtime runs float32 only on the CPU; "
                           f"--runtime openvino runs {requested}; running float32")
    return requested, ""


def pick_cpu_runtime(onnx_ms: float, openvino_ms: float | None) -> str:
    """--runtime auto on a CPU: "openvino" when it is installed (openvino_ms not None) and not slower
    than ONNX Runtime for this network (float32, CPU ms per call, measured on this machine), else "onnx"."""
    if openvino_ms is None:
        return "onnx"
    return "openvino" if openvino_ms <= onnx_ms else "onnx"


def bf16_hint(flags, precision: str, f32_ms: float | None, bf16_ms: float | None) -> str:
    """The start-up line's word on bfloat16 when running float32 on a CPU that has it in hardware,
    with the speed-up measured on this machine ("" when there is nothing to say)."""
    flag = native_flag("bfloat16", flags)
    if flag is None or precision != "float32":
        return ""
    measured = (f" ({f32_ms / bf16_ms:.1f}x faster than float32, measured here)"
                if f32_ms and bf16_ms else "")
    return (f"this CPU runs bfloat16 natively ({flag}): --precision bf16 --runtime openvino{measured}; "
            f"heatmaps move by about 1.2% of their maximum; the default stays float32")


def machine_signature(flags) -> str:
    """What a compiled model or a timing is only valid on: the architecture and the CPU's flags
    (a compiled OpenVINO model holds kernels for this instruction set)."""
    import hashlib

    return f"{platform.machine()} {hashlib.sha256(' '.join(sorted(flags)).encode()).hexdigest()[:16]}"
