"""SampleRNN's sample-by-sample generation loop, built for per-op overhead (issue 14).

Why a module of its own: generating one sample is ~0.2 MFLOP at the default sizes
(H = 256), a few microseconds of arithmetic, so the time goes to the *number* of tensor
operations per sample, to how each reads its weights, and to Python, not to the maths.
Measured on the 2-core CPU (bench/bench_generate.py, bench/RESULTS.md), this loop does:

- the sample MLP's first layer *and* the conditioning as one gather and one sum: the
  embedding is linear before `mlp_in` (a width-`F` convolution), so `mlp_in(emb(c))` =
  Σ_p `table[p][c[t-F+p]]` with `table[p] = emb.weight @ W_p.T` precomputed once per call
  (F·Q·H floats: 4 MB at the defaults); the lowest frame tier writes its conditioning
  vectors (with `mlp_in`'s bias inside) into extra rows of the same table, so sample t
  sums F code rows and one conditioning row;
- the frame tiers only every `F_k` samples, in torch on every intra-op thread, each
  LSTM layer as one `addmm` over [x, h] (GRU layers: `gru_cell`), the tier's input map
  folded into its first layer (`_TierStep`): the up-projection to F conditioning vectors
  (H → F·H, 4 MB of weights) is bound by memory bandwidth, which a second core adds to;
- a lowest frame's samples (the MLP and the draw) in one call of the C kernel
  (samplernn_kernel.c, built by samplernn_kernel.py), one group of streams per intra-op
  thread: no dispatch per operation, tiles of outputs summed in registers, the draw
  by the inverse CDF from one pre-drawn uniform per stream in (0, 1]. Measured: 3–4×
  fewer µs per sample than the TorchScript loop below;
- where no C compiler builds the kernel (or for CUDA and float64 weights), the same
  samples in `frame_samples` (TorchScript, else eager): `index_select` + `sum` for the
  first layer (~3× cheaper than `embedding_bag`, which builds its offsets on every
  call), `addmm` on weights stored (in, out) contiguous into preallocated buffers
  (without `out=`, TorchScript splits each `addmm` into `mm` + `add`), and the kernel's
  draw: the inverse CDF (models/draw.py) of the same pre-drawn uniforms, so that a seed
  draws the same codes with and without a compiler (issue 20; before, this loop drew by
  Gumbel-max for few streams: ~10 % faster at one stream, other codes from the same
  seed); `T = 0`: the argmax. The per-sample ops run on one intra-op thread unless a
  step is large (`loop_threads`).

Nucleus sampling (`top_p` < 1) follows models/draw.py's rule in both loops (the kernel
finds the nucleus's threshold by bisection instead of a sort; bench/RESULTS.md has the
cost of each). The log-likelihood of the drawn codes (`loglik_out`, for ranking
candidates) is read off each frame's logits after the frame, in either loop.

The logits equal `SampleRNN.forward` (teacher forcing) to float32 rounding: the same
sums in another order. So the two loops draw the same codes except where a uniform
falls within that rounding of an edge of the cumulative distribution: measured about
once in 10⁵ draws with logits to ±20, never in 4 × 10⁵ with small ones (bench/RESULTS.md);
after such a draw the two continuations part.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Optional

import torch
from torch import Tensor, nn

from audiolstm.models import samplernn_kernel
from audiolstm.models.base import ProgressFn
from audiolstm.models.draw import inverse_cdf, nucleus

#: uniforms drawn ahead per refill (samples × batch), ~4 MB of float32
NOISE_BLOCK = 1 << 20


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with `n` intra-op threads and restore the setting after (~0.3 µs a switch)."""
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
    """Threads for the per-sample ops: one, unless a step has enough arithmetic to share.

    Measured (bench/bench_generate.py, 2-core CPU): a 256 × 256 `addmm` of one stream
    takes ~6 µs on one thread and ~11 µs on two, and at 16 streams the same on both; only
    steps far above that (16 streams at H = 1024, ~80 MFLOP) are given every thread.
    """
    flops = 2 * batch * (2 * mlp_hidden * mlp_hidden + 256 * mlp_hidden)
    return torch.get_num_threads() if flops >= (1 << 25) else 1


def _transposed(weight: Tensor) -> Tensor:
    """An (out, in) weight as a contiguous (in, out) matrix for `addmm(bias, x, w)`."""
    return weight.t().contiguous()


class _LSTMLayer:
    """One LSTM layer stepped as one `addmm` over [x, h] and the gate maths."""

    def __init__(self, rnn: nn.LSTM, i: int, w_ih: Tensor, b_ih: Tensor) -> None:
        self.w = _transposed(torch.cat([w_ih, getattr(rnn, f"weight_hh_l{i}")], dim=1))
        self.bias = b_ih + getattr(rnn, f"bias_hh_l{i}")
        self.h = self.c = self.bias  # replaced by set_state

    def set_state(self, h: Tensor, c: Tensor) -> None:
        self.h, self.c = h.clone(), c.clone()

    def step(self, x: Tensor) -> Tensor:
        """x (B, D) -> new h (B, H); gate order i, f, g, o as in nn.LSTM."""
        gates = torch.addmm(self.bias, torch.cat([x, self.h], dim=1), self.w)
        i, f, g, o = gates.chunk(4, dim=1)
        self.c = torch.addcmul(f.sigmoid_() * self.c, i.sigmoid_(), g.tanh_())
        self.h = o.sigmoid_() * torch.tanh(self.c)
        return self.h


class _GRULayer:
    """One GRU layer stepped by `torch.gru_cell` (its new gate needs W_hh h apart)."""

    def __init__(self, rnn: nn.GRU, i: int, w_ih: Tensor, b_ih: Tensor) -> None:
        self.weights = (w_ih, getattr(rnn, f"weight_hh_l{i}"), b_ih,
                        getattr(rnn, f"bias_hh_l{i}"))
        self.h = self.weights[0]  # replaced by set_state

    def set_state(self, h: Tensor) -> None:
        self.h = h.clone()

    def step(self, x: Tensor) -> Tensor:
        self.h = torch.gru_cell(x, self.h, *self.weights)
        return self.h


class _TierStep:
    """One frame tier stepped one frame at a time on its raw weights.

    The tier's input map is folded into its first RNN layer: with x = s·codes − 1 (the
    codes as levels in [−1, 1]), W_ih (inp(x) + above) = (s W_ih W_inp) codes + W_ih above
    + W_ih (b_inp − W_inp 1), so the first layer reads the F raw codes (and the tier
    above's conditioning) with one weight: one product fewer a frame, and F + H instead
    of 2H input weights to read (measured: the frame tier is memory-bound at one stream).
    """

    def __init__(self, tier: nn.Module, level_scale: float, extra_bias: Tensor | None,
                 has_above: bool, out_width: int | None = None) -> None:
        self.frame_size, self.ratio, self.out_dim = tier.frame_size, tier.ratio, tier.out_dim
        rnn = tier.rnn
        self.lstm = isinstance(rnn, nn.LSTM)
        self.hidden = rnn.hidden_size
        w_ih, w_inp = rnn.weight_ih_l0, tier.inp.weight  # (G, H), (H, F)
        folded_w = [(w_ih @ w_inp) * level_scale]
        if has_above:  # the tier above adds its conditioning to inp(x)
            folded_w.append(w_ih)
        folded_b = rnn.bias_ih_l0 + w_ih @ (tier.inp.bias - w_inp.sum(dim=1))
        firsts = [(torch.cat(folded_w, dim=1), folded_b)] + [
            (getattr(rnn, f"weight_ih_l{i}"), getattr(rnn, f"bias_ih_l{i}"))
            for i in range(1, rnn.num_layers)]
        layer = _LSTMLayer if self.lstm else _GRULayer
        self.layers = [layer(rnn, i, w, b) for i, (w, b) in enumerate(firsts)]
        b_up = tier.up.bias
        if extra_bias is not None:  # mlp_in's bias, added to every sample's conditioning
            b_up = b_up + extra_bias.repeat(self.ratio)
        self.w_up, self.b_up = _transposed(tier.up.weight), b_up
        if out_width is not None and out_width != self.out_dim:  # zero-pad each vector
            self.w_up = _pad_last(self.w_up.view(self.hidden, self.ratio, -1), out_width)
            self.b_up = _pad_last(self.b_up.view(self.ratio, -1), out_width)
            self.w_up, self.b_up = self.w_up.flatten(1), self.b_up.flatten()
            self.out_dim = out_width

    def set_state(self, state: Any, batch: int, like: Tensor) -> None:
        """nn.LSTM/GRU state ((L, B, H) tensors, or None for zeros) -> per-layer states."""
        if state is None:
            zeros = like.new_zeros(len(self.layers), batch, self.hidden)
            state = (zeros, zeros) if self.lstm else zeros
        for i, layer in enumerate(self.layers):
            if self.lstm:
                layer.set_state(state[0][i], state[1][i])
            else:
                layer.set_state(state[i])

    def step(self, codes: Tensor, above: Tensor | None, out: Tensor | None = None) -> Tensor:
        """codes (B, F) of the frame just completed, conditioning (B, H) -> (B, ratio, out)
        (written into `out`, (B, ratio·out), when given)."""
        x = codes.to(self.w_up.dtype)
        if above is not None:
            x = torch.cat([x, above], dim=1)
        for layer in self.layers:
            x = layer.step(x)
        out = torch.addmm(self.b_up, x, self.w_up, out=out)
        return out.view(out.shape[0], self.ratio, self.out_dim)


class SampleLoop:
    """Precomputed weights and buffers for one `SampleRNN.generate` call.

    With the C kernel (`samplernn_kernel.load()`, float32 on the CPU, unless `kernel` is
    False) every width is
    zero-padded to the kernel's alignment (zero rows and columns add nothing), and the
    streams are split into one group per intra-op thread for the per-sample part.
    """

    def __init__(self, model: nn.Module, batch: int, kernel: bool = True) -> None:
        self.batch = batch
        self.q = model.q_levels
        self.fb = model.frame_sizes[-1]
        w = model.mlp_in.weight  # (H, E, F)
        self.kernel = (samplernn_kernel.load() if kernel and w.device.type == "cpu"
                       and w.dtype == torch.float32 else None)
        align = self.kernel.samplernn_align_floats() if self.kernel is not None else 1
        hidden = w.shape[0]
        width = -(-hidden // align) * align
        scale = 2.0 / (model.q_levels - 1)
        last = len(model.tiers) - 1
        self.tiers = [_TierStep(t, scale, model.mlp_in.bias if k == last else None, k > 0,
                           out_width=width if k == last else None)
                      for k, t in enumerate(model.tiers)]
        # table[p * Q + c] = W_p @ emb[c]: mlp_in on a window = a sum of F gathered rows;
        # then B·F rows for the conditioning of each stream's current lowest frame
        emb = model.embedding.weight  # (Q, E)
        code_rows = self.fb * self.q
        self.table = w.new_zeros(code_rows + batch * self.fb, width)
        self.table[:code_rows, :hidden] = torch.einsum("qe,hep->pqh", emb, w).reshape(
            code_rows, -1)
        self.cond = self.table[code_rows:].view(batch, -1)  # the lowest tier writes here
        fb, q = self.fb, self.q
        self.offsets = (torch.arange(fb, device=w.device) * q).expand(batch, -1)
        # rows[j]: the table rows summed for sample j of a frame, stream by stream: F codes
        # (written per sample through codes[j], offset into their positions' blocks) and
        # the stream's conditioning row for sample j
        idx = torch.empty(fb, batch, fb + 1, dtype=torch.long, device=w.device)
        idx[:, :, fb] = (code_rows + torch.arange(batch, device=w.device) * fb
                         + torch.arange(fb, device=w.device)[:, None])
        self.rows = [r.view(-1) for r in idx.unbind(0)]
        self.codes = [r[:, :fb] for r in idx.unbind(0)]
        linears = _mlp_linears(model.mlp)
        self.mlp: list[tuple[Tensor, Tensor]] = []
        for lin in linears:  # (bias, (in, out) weight), zero-padded to `align`
            size = [-(-n // align) * align for n in (lin.in_features, lin.out_features)]
            weight = lin.weight.new_zeros(size)
            weight[: lin.in_features, : lin.out_features] = lin.weight.t()
            self.mlp.append((_pad_last(lin.bias, size[1]), weight))
        self.out = [w.new_empty(batch, lin.out_features) for lin in linears]  # their outputs
        self.groups = self._kernel_groups(width) if self.kernel is not None else None

    def _kernel_groups(self, width: int) -> Any:
        """The kernel's arguments, one group of streams per intra-op thread (a ctypes
        array of FrameArgs): the fields that stay fixed; `run` fills in the rest."""
        batch, fb = self.batch, self.fb
        groups = min(torch.get_num_threads(), batch)
        bounds = [batch * g // groups for g in range(groups + 1)]
        (b1, w1), (b2, w2), (b3, w3) = self.mlp
        h2, qp = w1.shape[1], w3.shape[1]
        # activations, and qp doubles (2 qp floats) a stream for the draw
        self.scratch = self.table.new_empty(batch, width + 2 * h2 + 3 * qp)
        cond = self.cond.view(batch, fb, width)
        self.group_starts = bounds[:-1]
        return (samplernn_kernel.FrameArgs * groups)(*[samplernn_kernel.FrameArgs(
            batch=hi - lo, frame=fb, q=self.q, h=width, h2=h2, qp=qp,
            table=self.table.data_ptr(), cond=cond[lo].data_ptr(),
            w1=w1.data_ptr(), b1=b1.data_ptr(), w2=w2.data_ptr(), b2=b2.data_ptr(),
            w3=w3.data_ptr(), b3=b3.data_ptr(), scratch=self.scratch[lo].data_ptr())
            for lo, hi in zip(bounds, bounds[1:], strict=False)])

    def set_state(self, state: list[Any]) -> None:
        for tier, s in zip(self.tiers, state, strict=True):
            tier.set_state(s, self.batch, self.table)

    def run(self, buf: Tensor, start: int, n: int, temperature: float,
            generator: torch.Generator | None, logits_out: Tensor | None,
            progress: ProgressFn | None, progress_every: int, top_p: float = 1.0,
            loglik_out: Tensor | None = None) -> None:
        """Fill buf[:, start : start + n] (codes) sample by sample; `start` is a multiple
        of the top frame size, where every tier is due to step.

        Python steps the frame tiers once per lowest frame (on every intra-op thread);
        the frame's samples run in the C kernel, one group of streams per thread, or else
        in `frame_samples` (TorchScript when it compiles, the same function eager
        otherwise) on `loop_threads`. Both draw by the inverse CDF of
        softmax(logits / temperature) from the same uniforms, one per stream and sample,
        drawn `NOISE_BLOCK` at a time from `generator` (`top_p` < 1: from its nucleus).
        `loglik_out` (B,) float64, when given, receives each
        stream's summed log-probability of its codes under softmax(logits), the model's
        own distribution (temperature 1, no truncation), in nats.
        """
        b, q, fb = self.batch, self.q, self.fb
        sizes = [t.frame_size for t in self.tiers]
        last = len(self.tiers) - 1
        conds: list[Tensor] = [self.table] * len(self.tiers)  # all replaced at t = start
        (b1, w1), (b2, w2), (b3, w3) = self.mlp
        kernel = self.kernel is not None
        # the logits: all of them (logits_out), or one frame's for the log-likelihood
        frame_logits = (self.table.new_empty(b, fb, q)
                        if loglik_out is not None and logits_out is None else None)
        uniform: Tensor | None = None
        uniform64: Tensor | None = None
        block = max(fb, NOISE_BLOCK // b // fb * fb)  # whole frames of draws
        noise_at = start  # first sample the current block covers
        samples = _frame_samples()
        frame_threads = torch.get_num_threads()
        inv_t = 1.0 / max(temperature, 1e-30)
        if kernel:
            self._bind(buf, inv_t, top_p, logits_out if frame_logits is None else frame_logits)
        i = 0
        with torch_threads(frame_threads if kernel else loop_threads(b, w1.shape[1])):
            while i < n:
                t = start + i  # a new lowest frame: step the tiers that are due
                with torch_threads(frame_threads):
                    for k, tier in enumerate(self.tiers):
                        fs = sizes[k]
                        if t % fs:
                            continue
                        above = None
                        if k:
                            j = (t % sizes[k - 1]) // fs
                            above = conds[k - 1][:, j]
                        conds[k] = tier.step(buf[:, t - fs : t], above,
                                             out=self.cond if k == last else None)
                m = min(fb, n - i)
                if temperature > 0 and (uniform is None or t + m > noise_at + uniform.shape[0]):
                    noise_at, size = t, min(block, n - i)
                    uniform = torch.rand(size, b, 1, generator=generator,  # in (0, 1]
                                         dtype=self.table.dtype, device=self.table.device)
                    uniform.neg_().add_(1.0)
                    # the kernel reads float32 uniforms, the fallback the same in float64
                    uniform64 = None if kernel else uniform.double()
                if kernel:
                    self._kernel_frame(t, m, uniform, t - noise_at,
                                       i if frame_logits is None else 0)
                else:
                    samples(buf, t, m, fb, self.table, self.offsets, self.rows, self.codes,
                            w1, b1, w2, b2, w3, b3, *self.out, uniform64, inv_t, top_p,
                            noise_at, logits_out if frame_logits is None else frame_logits,
                            i if frame_logits is None else 0)
                if loglik_out is not None:
                    logits = (frame_logits[:, :m] if frame_logits is not None
                              else logits_out[:, i : i + m])
                    own = torch.log_softmax(logits, dim=2).gather(2, buf[:, t : t + m, None])
                    loglik_out += own.sum((1, 2), dtype=torch.float64)
                i += m
                if progress and (i % progress_every == 0 or i == n):
                    progress(i, n)

    def _bind(self, buf: Tensor, inv_t: float, top_p: float, logits: Tensor | None) -> None:
        """Point the kernel's groups at this run's codes, temperature, nucleus and logits
        (B, N, Q)."""
        if buf.dtype != torch.long or buf.stride(1) != 1:
            raise ValueError("the codes buffer must be int64 and contiguous along time")
        for lo, args in zip(self.group_starts, self.groups, strict=True):
            args.codes, args.codes_stride = buf[lo].data_ptr(), buf.stride(0)
            args.inv_t, args.top_p, args.uniform_stride = inv_t, top_p, self.batch
            if logits is not None:
                args.logits, args.logits_stride = logits[lo].data_ptr(), logits.stride(0)

    def _kernel_frame(self, t: int, m: int, uniform: Tensor | None, row: int, i: int) -> None:
        """Samples t .. t + m - 1 in the kernel, their logits (if bound) from index i on;
        `uniform` (N, B, 1) holds this frame's draws from its row `row` on (None: the
        argmax)."""
        item = self.table.element_size()
        for lo, args in zip(self.group_starts, self.groups, strict=True):
            args.t0, args.m, args.logits_at = t, m, i * self.q
            args.uniform = (None if uniform is None
                            else uniform.data_ptr() + (row * self.batch + lo) * item)
        self.kernel.samplernn_frames(self.groups, len(self.groups))


def frame_samples(buf: Tensor, t0: int, m: int, fb: int, table: Tensor, offsets: Tensor,
                  rows: list[Tensor], codes: list[Tensor],
                  w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, w3: Tensor, b3: Tensor,
                  o1: Tensor, o2: Tensor, o3: Tensor,
                  uniform: Optional[Tensor], inv_t: float, top_p: float,  # noqa: UP045
                  noise_at: int, logits_out: Optional[Tensor], i0: int) -> None:  # noqa: UP045
    """The sample MLP and the draw for samples t0 .. t0 + m - 1 of one lowest frame.

    Sample t's first layer is the sum of the rows `rows[t % fb]` of `table`: its fb codes
    (offset into their positions' blocks, written through `codes[t % fb]`) and its
    conditioning row. The draw: `uniform` (one float64 number per stream and sample, from
    sample `noise_at` on) through the inverse CDF of softmax(logits · inv_t) in float64,
    its nucleus when `top_p` < 1 (models/draw.py), or (None) the argmax. The logits of sample t0 + j go
    to `logits_out[:, i0 + j]` when given. Written for TorchScript: typed, no closures.
    """
    b = buf.shape[0]
    for j in range(m):
        t = t0 + j
        r = t % fb
        torch.add(buf[:, t - fb : t], offsets, out=codes[r])
        x = table.index_select(0, rows[r]).view(b, fb + 1, -1).sum(1)
        x = torch.addmm(b1, x.relu_(), w1, out=o1)
        x = torch.addmm(b2, x.relu_(), w2, out=o2)
        x = torch.addmm(b3, x.relu_(), w3, out=o3)
        if logits_out is not None:
            logits_out[:, i0 + j] = x
        if uniform is not None:  # in float64, as the kernel (samplernn_kernel.c: why)
            probs = torch.softmax(x.double().mul_(inv_t), dim=1)
            if top_p < 1.0:
                probs = nucleus(probs, top_p)
            buf[:, t] = inverse_cdf(probs, uniform[t - noise_at])[:, 0]
        else:
            torch.argmax(x, 1, False, out=buf[:, t])


#: False: always run `frame_samples` eagerly (tests compare the two)
SCRIPTED = True
_scripted: list[Callable[..., None]] = []


def _frame_samples() -> Callable[..., None]:
    """`frame_samples` compiled by TorchScript (once per process), else itself.

    Measured (bench/RESULTS.md): TorchScript runs the per-sample ops with less overhead
    than the Python interpreter and scripts in a fraction of a second (torch.compile
    took minutes here). TorchScript is deprecated in torch 2.x: where it is gone or
    fails, the same function runs eagerly with the same results.
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


def _pad_last(x: Tensor, size: int) -> Tensor:
    """x zero-padded (at the end) to `size` along its last dimension."""
    return torch.nn.functional.pad(x, (0, size - x.shape[-1]))


def _mlp_linears(mlp: nn.Sequential) -> list[nn.Linear]:
    """The sample MLP's three Linear layers; it must be (ReLU, Linear) × 3."""
    kinds = [type(m) for m in mlp]
    if kinds != [nn.ReLU, nn.Linear] * 3:
        names = ", ".join(k.__name__ for k in kinds)
        raise TypeError(f"SampleLoop expects the sample MLP (ReLU, Linear) x 3, got {names}")
    return [m for m in mlp if isinstance(m, nn.Linear)]
