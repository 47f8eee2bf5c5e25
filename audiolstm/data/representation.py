"""Frame representations: what the network sees for one frame of `x_len` samples.

- ``time``: the samples themselves, D = x_len.
- ``fft`` (GRUV): real ‖ imaginary parts of the x_len-point DFT, D = 2·x_len. Half of
  it is redundant for real audio (conjugate symmetry) but that is what GRUV fed its LSTM.
- ``rfft``: the non-redundant part: real parts of bins 0..x_len//2 and imaginary parts
  of bins 1..(x_len-1)//2 (DC's, and Nyquist's for even x_len, are identically zero),
  D = x_len exactly.

All transforms use ``norm="ortho"`` (unitary), so feature magnitudes are on the scale
of the samples and the normaliser's range carries over; GRUV used the unnormalised DFT,
which differs by the constant factor sqrt(x_len). Optional per-dimension
standardisation (GRUV did it) is fitted on training frames and applied inside
`encode`/`decode`, which stay exact inverses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from audiolstm.errors import UserError, positive_int

KINDS = ("time", "fft", "rfft")
#: std floor, relative to the mean std over dims: identically-zero dims must not blow up.
STD_FLOOR = 1e-3


class Representation:
    """Invertible per-frame encoding, applied on the last dimension (any leading dims)."""

    def __init__(self, kind: str, x_len: int, standardize: bool = False) -> None:
        if kind not in KINDS:
            raise UserError(f"repr.kind={kind!r} is unknown; choose one of {', '.join(KINDS)}")
        positive_int(x_len, "data.x_len")
        self.kind = kind
        self.x_len = x_len
        self.standardize = standardize
        self.mean: Tensor | None = None
        self.std: Tensor | None = None

    @property
    def dim(self) -> int:
        """Feature size D per frame."""
        return 2 * self.x_len if self.kind == "fft" else self.x_len

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    def __repr__(self) -> str:
        return f"Representation(kind={self.kind!r}, x_len={self.x_len}, standardize={self.standardize})"

    # -- raw transforms ---------------------------------------------------------------
    def _encode_raw(self, x: Tensor) -> Tensor:
        if self.kind == "time":
            return x
        if self.kind == "fft":
            z = torch.fft.fft(x, norm="ortho")
            return torch.cat([z.real, z.imag], dim=-1)
        z = torch.fft.rfft(x, norm="ortho")
        n_imag = (self.x_len - 1) // 2
        return torch.cat([z.real, z.imag[..., 1 : 1 + n_imag]], dim=-1)

    def _decode_raw(self, f: Tensor) -> Tensor:
        if self.kind == "time":
            return f
        n = self.x_len
        if self.kind == "fft":
            z = torch.complex(f[..., :n], f[..., n:])
            return torch.fft.ifft(z, norm="ortho").real
        n_real = n // 2 + 1
        real = f[..., :n_real]
        imag = torch.zeros_like(real)
        imag[..., 1 : n - n_real + 1] = f[..., n_real:]
        return torch.fft.irfft(torch.complex(real, imag), n=n, norm="ortho")

    # -- public -------------------------------------------------------------------------
    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        if self.mean is None or self.std is None:
            raise RuntimeError("Representation(standardize=True) used before fit()")
        return (
            self.mean.to(device=like.device, dtype=like.dtype),
            self.std.to(device=like.device, dtype=like.dtype),
        )

    def encode(self, frames: Tensor) -> Tensor:
        """[..., x_len] samples -> [..., dim] features."""
        if frames.shape[-1] != self.x_len:
            raise ValueError(f"expected frames of {self.x_len} samples, got {frames.shape}")
        f = self._encode_raw(frames)
        if self.standardize:
            mean, std = self._stats(f)
            f = (f - mean) / std
        return f

    __call__ = encode

    def decode(self, feats: Tensor) -> Tensor:
        """[..., dim] features -> [..., x_len] samples (exact inverse of `encode`)."""
        if feats.shape[-1] != self.dim:
            raise ValueError(f"expected {self.dim} features, got {feats.shape}")
        if self.standardize:
            mean, std = self._stats(feats)
            feats = feats * std + mean
        return self._decode_raw(feats)

    @torch.no_grad()
    def fit(
        self,
        frames: Tensor | np.ndarray,
        shift: float = 0.0,
        scale: float = 1.0,
        chunk: int = 4096,
    ) -> Representation:
        """Per-dim mean/std of encoded training frames (no-op unless `standardize`).

        `frames` are training frames [N, x_len], a tensor or an array (the raw split
        reshaped into non-overlapping frames costs nothing), normalised here as
        (x - shift) / scale; they are streamed `chunk` at a time in float64, so a
        memmapped split is never copied whole.
        """
        if not self.standardize:
            return self
        if frames.ndim != 2 or frames.shape[1] != self.x_len or frames.shape[0] == 0:
            raise ValueError(f"fit needs frames [N, {self.x_len}] with N > 0, got {frames.shape}")
        n_frames = frames.shape[0]

        def encoded(i: int) -> Tensor:
            c = frames[i : i + chunk]
            c = torch.from_numpy(np.array(c, np.float64)) if isinstance(c, np.ndarray) else c
            return self._encode_raw((c.to(torch.float64) - shift) / scale)

        total = torch.zeros(self.dim, dtype=torch.float64)
        for i in range(0, n_frames, chunk):
            total += encoded(i).sum(0)
        mean = total / n_frames
        ss = torch.zeros(self.dim, dtype=torch.float64)
        for i in range(0, n_frames, chunk):
            ss += ((encoded(i) - mean) ** 2).sum(0)
        std = (ss / n_frames).sqrt()
        floor = max(STD_FLOOR * float(std.mean()), 1e-12)
        self.mean = mean.float()
        self.std = std.clamp_min(floor).float()
        return self

    def state_dict(self) -> dict[str, Any]:
        """Plain values and lists, so checkpoints (and JSON) can carry it."""
        return {
            "kind": self.kind,
            "x_len": self.x_len,
            "standardize": self.standardize,
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if (d["kind"], int(d["x_len"])) != (self.kind, self.x_len):
            raise ValueError(
                f"state is for kind={d['kind']!r}, x_len={d['x_len']}; "
                f"this is kind={self.kind!r}, x_len={self.x_len}"
            )
        self.standardize = bool(d["standardize"])
        self.mean = None if d["mean"] is None else torch.as_tensor(d["mean"], dtype=torch.float32)
        self.std = None if d["std"] is None else torch.as_tensor(d["std"], dtype=torch.float32)

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> Representation:
        rep = cls(d["kind"], int(d["x_len"]), bool(d["standardize"]))
        rep.load_state_dict(d)
        return rep
