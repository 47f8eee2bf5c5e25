"""Build and bind `samplernn_kernel.c`, SampleRNN's per-sample step in C (issue 14).

Why compiled at run time, by the system C compiler, into a temporary file: the source is
~200 lines of plain C (no Python or torch headers) and builds in under a second, so there
is no wheel to ship per platform, nothing to install, and no cache to go stale on another
CPU (`-march=native` fits the machine that runs it). Where no compiler works (`CC`, else
`cc`), `load()` logs one line and returns None, and generation runs the TorchScript loop
(`samplernn_step.frame_samples`): the same draw rule (models/draw.py) on the same
uniforms, so the same codes from the same seed (to float32 rounding of the logits), 1.5-3x
slower.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_suffix(".c")
#: tried in order: tuned for this CPU with OpenMP (the groups of streams side by side),
#: without OpenMP (one group after another), portable
FLAGS = (["-O3", "-march=native", "-fno-math-errno", "-fopenmp"],
         ["-O3", "-march=native", "-fno-math-errno"], ["-O3", "-fno-math-errno"])

_i64, _ptr, _f64 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double


class FrameArgs(ctypes.Structure):
    """`FrameArgs` of samplernn_kernel.c, field for field (pointers as addresses)."""

    _fields_ = [
        ("batch", _i64), ("frame", _i64), ("q", _i64), ("h", _i64), ("h2", _i64),
        ("qp", _i64),
        ("codes", _ptr), ("codes_stride", _i64),
        ("table", _ptr), ("cond", _ptr),
        ("w1", _ptr), ("b1", _ptr), ("w2", _ptr), ("b2", _ptr), ("w3", _ptr), ("b3", _ptr),
        ("scratch", _ptr),
        ("uniform", _ptr), ("uniform_stride", _i64),
        ("inv_t", _f64), ("top_p", _f64),
        ("logits", _ptr), ("logits_stride", _i64), ("logits_at", _i64),
        ("t0", _i64), ("m", _i64),
    ]


#: False: never use the kernel (tests and benchmarks compare the two loops)
ENABLED = True


@functools.cache
def _build() -> ctypes.CDLL | None:
    """Compile with the first flags that build and load; None (and one log line) if none."""
    compiler = shlex.split(os.environ.get("CC", "cc"))
    errors = []
    with tempfile.TemporaryDirectory(prefix="audiolstm-kernel-") as tmp:
        target = Path(tmp) / "samplernn_kernel.so"
        for flags in FLAGS:
            cmd = [*compiler, *flags, "-shared", "-fPIC", "-o", str(target), str(SOURCE)]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as err:
                errors.append(str(err))
                break  # no compiler at all: the other flags will not help
            if done.returncode != 0:
                errors.append((done.stderr.strip().splitlines() or ["failed"])[0])
                continue
            try:  # it stays mapped after the file is removed
                lib = ctypes.CDLL(str(target))
            except OSError as err:  # e.g. no libgomp at run time, or a noexec temp dir
                errors.append(str(err))
                continue
            lib.samplernn_frames.argtypes = [ctypes.POINTER(FrameArgs), ctypes.c_int64]
            lib.samplernn_frames.restype = None
            lib.samplernn_align_floats.restype = ctypes.c_int
            lib.flags = " ".join(flags)
            return lib
    log.warning("SampleRNN generation runs the TorchScript loop (~3x slower): could not "
                "build %s with %s: %s", SOURCE.name, " ".join(compiler), errors[-1])
    return None


def load() -> ctypes.CDLL | None:
    """The built kernel (once per process), or None where it is disabled or cannot build."""
    return _build() if ENABLED else None
