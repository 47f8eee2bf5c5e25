"""SampleRNN's sample-by-sample generation loop, built for per-op overhead (issue 14).

Why a module of its own: generating one sample is ~0.2 MFLOP at the default sizes
(H = 256), a few microseconds of arithmetic, so the time goes to the *number* of tensor
operations per sample and to Python, not to the maths. This loop does per sample:

- the sample MLP's first layer as one `embedding_bag`: the embedding is linear before
  `mlp_in` (a width-`F` convolution), so `mlp_in(emb(c))` = Σ_p `table[p][c[t-F+p]]` with
  `table[p] = emb.weight @ W_p.T` precomputed once per call (F·Q·H floats: 4 MB at the
  defaults); `mlp_in`'s bias rides with the conditioning vector instead;
- the other layers as `addmm` into preallocated buffers, ReLUs in place;
- the draw as Gumbel-max: `argmax(logits + T·g)` with `g` standard Gumbel noise is an
  exact draw from `softmax(logits / T)`; the noise for many samples is drawn in one
  vectorised call ahead of time, so the draw costs one add and one argmax (`T = 0`:
  the argmax alone);
- the frame tiers only every `F_k` samples, as `lstm_cell`/`gru_cell` calls on the
  layer weights (one op per layer instead of an `nn.LSTM` call).

The logits equal `SampleRNN.forward` (teacher forcing) to float32 rounding: the same
sums in another order. Timings and the per-sample budget: bench/bench_generate.py,
bench/RESULTS.md.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiolstm.models.base import ProgressFn

#: random numbers drawn ahead per refill (samples × batch × levels), ~4 MB of float32
NOISE_BLOCK = 1 << 20


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with `n` intra-op threads and restore the setting after.

    Per-sample ops are microseconds long; waking a second OpenMP thread for each costs
    more than it saves, and on a shared 2-core machine a busy core stalls every op.
    """
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def loop_threads(batch: int, mlp_hidden: int) -> int:
    """Threads for the per-sample loop: one, unless a step has enough arithmetic to share.

    Measured (bench/bench_generate.py, on the shared 2-core machine): at 16 streams of
    H = 256 (~6 MFLOP a step) two threads were no faster than one; only steps far above
    that (16 streams at H = 1024, ~80 MFLOP) are given every thread.
    """
    flops = 2 * batch * (2 * mlp_hidden * mlp_hidden + 256 * mlp_hidden)
    return torch.get_num_threads() if flops >= (1 << 25) else 1


class _TierStep:
    """One frame tier stepped one frame at a time on its raw weights."""

    def __init__(self, tier: nn.Module, level_scale: float, extra_bias: Tensor | None) -> None:
        self.frame_size, self.ratio, self.out_dim = tier.frame_size, tier.ratio, tier.out_dim
        self.level_scale = level_scale
        self.w_inp, self.b_inp = tier.inp.weight.t(), tier.inp.bias
        rnn = tier.rnn
        self.lstm = isinstance(rnn, nn.LSTM)
        self.cell = torch.lstm_cell if self.lstm else torch.gru_cell
        self.weights = [
            (getattr(rnn, f"weight_ih_l{i}"), getattr(rnn, f"weight_hh_l{i}"),
             getattr(rnn, f"bias_ih_l{i}"), getattr(rnn, f"bias_hh_l{i}"))
            for i in range(rnn.num_layers)
        ]
        b_up = tier.up.bias
        if extra_bias is not None:  # mlp_in's bias, added to every sample's conditioning
            b_up = b_up + extra_bias.repeat(self.ratio)
        self.w_up, self.b_up = tier.up.weight.t(), b_up
        self.h: list[Any] = []

    def set_state(self, state: Any, batch: int, like: Tensor) -> None:
        """nn.LSTM/GRU state ((L, B, H) tensors, or None for zeros) -> per-layer states."""
        layers = len(self.weights)
        hidden = self.weights[0][1].shape[1]
        if state is None:
            zeros = like.new_zeros(layers, batch, hidden)
            state = (zeros, zeros.clone()) if self.lstm else zeros
        if self.lstm:
            h, c = state
            self.h = [(h[i].clone(), c[i].clone()) for i in range(layers)]
        else:
            self.h = [state[i].clone() for i in range(layers)]

    def step(self, codes: Tensor, above: Tensor | None) -> Tensor:
        """codes (B, F) of the frame just completed, conditioning (B, H) -> (B, ratio, out)."""
        x = codes.to(self.w_inp.dtype).mul_(self.level_scale).sub_(1.0)
        x = torch.addmm(self.b_inp, x, self.w_inp)
        if above is not None:
            x += above
        for i, (w_ih, w_hh, b_ih, b_hh) in enumerate(self.weights):
            s = self.cell(x, self.h[i], w_ih, w_hh, b_ih, b_hh)
            self.h[i] = s
            x = s[0] if self.lstm else s
        out = torch.addmm(self.b_up, x, self.w_up)
        return out.view(out.shape[0], self.ratio, self.out_dim)


class SampleLoop:
    """Precomputed weights and buffers for one `SampleRNN.generate` call."""

    def __init__(self, model: nn.Module, batch: int) -> None:
        self.model = model
        self.batch = batch
        self.q = model.q_levels
        self.fb = model.frame_sizes[-1]
        scale = 2.0 / (model.q_levels - 1)
        last = len(model.tiers) - 1
        self.tiers = [_TierStep(t, scale, model.mlp_in.bias if k == last else None)
                      for k, t in enumerate(model.tiers)]
        # table[p * Q + c] = W_p @ emb[c]: mlp_in on a window = a sum of F gathered rows
        w = model.mlp_in.weight  # (H, E, F)
        emb = model.embedding.weight  # (Q, E)
        self.table = torch.einsum("qe,hep->pqh", emb, w).reshape(self.fb * self.q, -1)
        self.offsets = (torch.arange(self.fb, device=w.device) * self.q).expand(batch, -1)
        # per layer: (bias, weight transposed, output buffer), or None for a ReLU
        layers = _mlp_layers(model.mlp)
        if [lin is None for lin in layers] != [True, False] * 3:
            raise TypeError("SampleLoop expects the sample MLP (ReLU, Linear) x 3")
        self.layers = [None if lin is None else
                       (lin.bias, lin.weight.t(), w.new_empty(batch, lin.out_features))
                       for lin in layers]
        self.idx = torch.empty(batch, self.fb, dtype=torch.long, device=w.device)

    def set_state(self, state: list[Any]) -> None:
        for tier, s in zip(self.tiers, state, strict=True):
            tier.set_state(s, self.batch, self.table)

    def run(self, buf: Tensor, start: int, n: int, temperature: float,
            generator: torch.Generator | None, logits_out: Tensor | None,
            progress: ProgressFn | None, progress_every: int) -> None:
        """Fill buf[:, start : start + n] (codes) sample by sample; `start` is a multiple
        of the top frame size, where every tier is due to step.

        Python steps the frame tiers once per lowest frame; the frame's samples run in
        `frame_samples` (TorchScript when it compiles, the same function eager otherwise).
        """
        b, q, fb = self.batch, self.q, self.fb
        sizes = [t.frame_size for t in self.tiers]
        conds: list[Tensor] = [self.table] * len(self.tiers)  # all replaced at t = start
        (b1, w1, o1), (b2, w2, o2), (b3, w3, o3) = (x for x in self.layers if x is not None)
        noise: Tensor | None = None
        block = max(fb, NOISE_BLOCK // (b * q) // fb * fb)  # whole frames of noise
        noise_at = start  # first sample the current noise block covers
        samples = _frame_samples()
        i = 0
        while i < n:
            t = start + i  # a new lowest frame: step the tiers that are due
            for k, tier in enumerate(self.tiers):
                fs = sizes[k]
                if t % fs:
                    continue
                above = None
                if k:
                    j = (t % sizes[k - 1]) // fs
                    above = conds[k - 1][:, j]
                conds[k] = tier.step(buf[:, t - fs : t], above)
            m = min(fb, n - i)
            if temperature > 0 and (noise is None or t + m > noise_at + noise.shape[0]):
                noise = gumbel(min(block, n - i), b, q, temperature, generator, like=self.table)
                noise_at = t
            samples(buf, t, m, fb, conds[-1], self.table, self.offsets, self.idx,
                    w1, b1, o1, w2, b2, o2, w3, b3, o3,
                    noise if temperature > 0 else None, noise_at, logits_out, i)
            i += m
            if progress and (i % progress_every == 0 or i == n):
                progress(i, n)


def frame_samples(buf: Tensor, t0: int, m: int, fb: int, cond: Tensor, table: Tensor,
                  offsets: Tensor, idx: Tensor,
                  w1: Tensor, b1: Tensor, o1: Tensor, w2: Tensor, b2: Tensor, o2: Tensor,
                  w3: Tensor, b3: Tensor, o3: Tensor,
                  noise: Optional[Tensor], noise_at: int,  # noqa: UP045 (TorchScript)
                  logits_out: Optional[Tensor], i0: int) -> None:  # noqa: UP045
    """The sample MLP and the draw for samples t0 .. t0 + m - 1 of one lowest frame.

    `cond` (B, fb, H): the frame's conditioning (mlp_in's bias inside). The first layer is
    Σ_p table[p][c[t - fb + p]] (one embedding_bag); `noise` is T × Gumbel noise from
    sample `noise_at` on (None: argmax). Written for TorchScript: typed, no closures.
    """
    for j in range(m):
        t = t0 + j
        torch.add(buf[:, t - fb : t], offsets, out=idx)
        x = F.embedding_bag(idx, table, mode="sum")
        x += cond[:, t % fb]
        x = torch.addmm(b1, x.relu_(), w1, out=o1)
        x = torch.addmm(b2, x.relu_(), w2, out=o2)
        x = torch.addmm(b3, x.relu_(), w3, out=o3)
        if logits_out is not None:
            logits_out[:, i0 + j] = x
        if noise is not None:
            x += noise[t - noise_at]
        buf[:, t] = torch.argmax(x, dim=1)


#: False: always run `frame_samples` eagerly (tests compare the two)
SCRIPTED = True
_scripted: list[Callable[..., None]] = []


def _frame_samples() -> Callable[..., None]:
    """`frame_samples` compiled by TorchScript (once per process), else itself.

    Measured (bench/RESULTS.md): TorchScript runs the per-sample ops with far less
    overhead than the Python interpreter, and scripts in a fraction of a second
    (torch.compile took minutes here). TorchScript is deprecated in torch 2.x: where it is
    gone or fails, the same function runs eagerly with the same results.
    """
    if not SCRIPTED:
        return frame_samples
    if not _scripted:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _scripted.append(torch.jit.script(frame_samples))
        except Exception:  # noqa: BLE001 - any failure: the eager function is the same code
            _scripted.append(frame_samples)
    return _scripted[0]


def _mlp_layers(mlp: nn.Sequential) -> list[nn.Linear | None]:
    """The sample MLP as a list of Linear layers and ReLUs (None); its last is a Linear."""
    layers: list[nn.Linear | None] = []
    for m in mlp:
        if isinstance(m, nn.ReLU):
            layers.append(None)
        elif isinstance(m, nn.Linear):
            layers.append(m)
        else:
            raise TypeError(f"SampleLoop handles Linear and ReLU layers, not {type(m).__name__}")
    return layers


def gumbel(n: int, batch: int, q: int, temperature: float,
           generator: torch.Generator | None, like: Tensor) -> Tensor:
    """`temperature` × standard Gumbel noise, (n, batch, q): argmax(logits + this) is a
    draw from softmax(logits / temperature) (the Gumbel-max trick).

    Uniforms are clamped to [tiny, 1): -log(-log u) stays finite, truncating the
    Gumbel's tails where float32 uniforms could not reach them anyway.
    """
    u = torch.rand(n, batch, q, generator=generator, dtype=like.dtype, device=like.device)
    u.clamp_(min=torch.finfo(like.dtype).tiny)
    return u.log_().neg_().log_().mul_(-temperature)
