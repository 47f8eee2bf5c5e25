"""`SampleRNN`: a sample-level autoregressive model (Mehri et al. 2017, "SampleRNN").

Why: `AudioRNN` predicts whole frames with a squared error, so it regresses to
the conditional mean and its frames tick at every boundary. SampleRNN predicts one
*sample* at a time, as a softmax over `q_levels` quantisation levels, so it is trained by
maximum likelihood, sampled at generation time, and has no frame boundary to tick at.

Tiers, top to bottom (`frame_sizes = [F_0, ..., F_{K-1}]`, each dividing the one above)::

    frame tier 0     frames of F_0 samples   -> RNN (steps every F_0 samples)
                      upsample x F_0/F_1: one conditioning vector per F_1-sample frame
    frame tier k     frames of F_k samples, projected, + tier k-1's conditioning
                      -> RNN (steps every F_k samples) -> upsample x F_k/F_{k+1}
    ...
    frame tier K-1   ... -> upsample x F_{K-1}: one conditioning vector per *sample*
    sample MLP       embeddings of the last F_{K-1} samples (a width-F_{K-1} convolution)
                      + the conditioning of the sample -> 3 x (ReLU, linear)
                      -> logits over q_levels

2-tier: `frame_sizes=[16]` (one frame tier + the MLP); 3-tier: `[64, 16]`.

Sequence layout (the reference implementation's): codes `c` of shape (B, F_0 + n). The
first F_0 samples are context only; the targets are `c[:, F_0:]` (n of them). Frame j of
tier k covers `c[F_0 - F_k + j F_k : F_0 + j F_k]` and conditions the F_k targets right
after it; the MLP predicts `c[t]` from `c[t - F_{K-1} : t]`. Everything is causal: the
logits for `c[t]` depend on `c[:t]` only. Frame tiers see the *level* of each code scaled
to [-1, 1] (`2q/(Q-1) - 1`: the companded value for mu-law), the MLP learned embeddings.

Shapes through `forward(codes (B, F_0 + n), state)` with n a multiple of F_0:

    tier k input   (B, n / F_k, F_k)       -> Linear -> (B, n / F_k, hidden)
    tier k output  (B, n / F_{k+1}, hidden)   (the last tier: (B, n, mlp_hidden))
    MLP            (B, n, mlp_hidden)      -> logits (B, n, q_levels)
    state          per frame tier: (h, c) for LSTM, h for GRU, each (rnn_layers, B, hidden)

Batches (the same data module as `AudioRNN`, `repr=time`, `hop == x_len`): frames
(B, T+1, x_len) of normalised samples are flattened to (B, (T+1)·x_len), taken back to the
**original scale** (the normaliser is affine and exactly invertible) and quantised there
(`audiolstm.models.quantize`, clamped to [-1, 1] as audio is): SampleRNN models 8-bit audio,
whatever `norm` the run uses (the default `std` included), so `norm` changes nothing it
learns, and its levels sit on the original [-1, 1] where the canonical likelihood is
defined. Each example is cut to the context plus whole top frames (at most F_0 − 1 samples
at its end are dropped), so any `x_len` works.

Training uses manual optimisation with truncated BPTT, like `AudioRNN`: the targets are
cut into chunks of `tbptt_steps` top frames, every tier's state is carried across chunks
detached (stateful across the chunks of one example, reset between examples), and the
optimiser steps once per chunk. Chunked and full forwards give the same logits.

Metrics: `loss` is the cross-entropy in nats per sample of its own quantisation, also
logged as bits under the name of its grid (`bits_per_sample_mulaw256`,
`bits_per_sample_linear256`, …); `bits_per_sample` is the canonical likelihood
(`audiolstm.evaluation.likelihood`: 256 linear levels of the original-scale [−1, 1]), each
level's mass spread uniformly over the original-scale interval its code covers (with
`quantization=linear q_levels=256` the two grids coincide and so do the numbers); `mse` is
the squared error, in normalised units, of the softmax's expected value (levels
dequantised) against the true, unquantised sample: comparable with `AudioRNN`'s `mse`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiolstm.errors import UserError, check_temperature, positive_int
from audiolstm.evaluation.likelihood import LN2, discrete_log_prob, spread_matrix
from audiolstm.models.base import AudioModel, ProgressFn, State, cpu_backend, run_chunks
from audiolstm.models.draw import check_top_p
from audiolstm.models.quantize import cell_edges, dequantize, quantize
from audiolstm.models.samplernn_fold import folded_mlp_in, folding_pays
from audiolstm.models.samplernn_step import SampleLoop

__all__ = ["SampleRNN"]


class FrameTier(nn.Module):
    """One frame-level tier: frame projection (+ conditioning) -> RNN -> upsampling.

    Upsampling by `ratio` is a linear map to `ratio` vectors per step, i.e. the
    paper's transposed convolution with kernel = stride = ratio.
    """

    def __init__(self, frame_size: int, ratio: int, hidden: int, out_dim: int,
                 rnn_layers: int, cell: str) -> None:
        super().__init__()
        self.frame_size, self.ratio, self.out_dim = frame_size, ratio, out_dim
        self.inp = nn.Linear(frame_size, hidden)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(hidden, hidden, num_layers=rnn_layers, batch_first=True)
        self.up = nn.Linear(hidden, ratio * out_dim)

    def forward(self, frames: Tensor, cond: Tensor | None, state: Any = None
                ) -> tuple[Tensor, Any]:
        """frames (B, T, F), cond (B, T, hidden) or None -> (B, T·ratio, out_dim), state."""
        h = self.inp(frames)
        if cond is not None:
            h = h + cond
        h, state = self.rnn(h, state)
        b, t, _ = h.shape
        return self.up(h).reshape(b, t * self.ratio, self.out_dim), state


class SampleRNN(AudioModel):
    checkpoint_class = "SampleRNN"
    fused_optimizer = True  # an optimiser step per 128-1024 samples: its cost shows

    def __init__(
        self,
        frame_sizes: list[int] | tuple[int, ...] = (16,),
        hidden: int = 256,
        rnn_layers: int = 1,
        cell: str = "lstm",
        mlp_hidden: int = 256,
        q_levels: int = 256,
        quantization: str = "mu_law",
        embed_dim: int = 64,
        tbptt_steps: int | None = None,
        grad_clip: float | None = 1.0,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        input_dim: int | None = None,  # the registry passes it to every model; unused here
    ) -> None:
        super().__init__()
        frame_sizes = check_frame_sizes(frame_sizes)
        for name, v in (("hidden", hidden), ("rnn_layers", rnn_layers),
                        ("mlp_hidden", mlp_hidden), ("embed_dim", embed_dim)):
            positive_int(v, f"model.{name}")
        positive_int(q_levels, "model.q_levels", minimum=2)
        if cell not in ("lstm", "gru"):
            raise UserError(f"model.cell must be 'lstm' or 'gru', got {cell!r}")
        if quantization not in ("mu_law", "linear"):
            raise UserError(
                f"model.quantization must be 'mu_law' or 'linear', got {quantization!r}")
        positive_int(tbptt_steps, "model.tbptt_steps", allow_none=True)
        # Plain containers only: checkpoints then load with torch.load(weights_only=True).
        self.save_hyperparameters()
        self.hparams.frame_sizes = frame_sizes
        self.frame_sizes = frame_sizes
        self.q_levels = q_levels
        self.quantization = quantization

        below = [*frame_sizes[1:], 1]  # the lowest frame tier upsamples to single samples
        last = len(frame_sizes) - 1
        self.tiers = nn.ModuleList(
            FrameTier(fs, fs // nxt, hidden, mlp_hidden if k == last else hidden,
                      rnn_layers, cell)
            for k, (fs, nxt) in enumerate(zip(frame_sizes, below, strict=True))
        )
        self.embedding = nn.Embedding(q_levels, embed_dim)
        self.mlp_in = nn.Conv1d(embed_dim, mlp_hidden, kernel_size=frame_sizes[-1])
        self.mlp = nn.Sequential(
            nn.ReLU(), nn.Linear(mlp_hidden, mlp_hidden),
            nn.ReLU(), nn.Linear(mlp_hidden, mlp_hidden),
            nn.ReLU(), nn.Linear(mlp_hidden, q_levels),
        )
        # Dequantised value of each level (original scale), for the expected value behind
        # `mse`; and how each level's mass spreads over the canonical bins (log, [Q, 256]).
        self.register_buffer(
            "levels", dequantize(torch.arange(q_levels), q_levels, quantization), persistent=False)
        spread = torch.from_numpy(spread_matrix(cell_edges(q_levels, quantization)))
        self.register_buffer("log_spread", spread.log(), persistent=False)
        #: run `mlp_in` over the embeddings as a folded-table lookup where it pays
        #: (`sample_logits`); False keeps the plain embedding + convolution (reference)
        self.fold_mlp_in = True

    # ------------------------------------------------------------------ network
    @property
    def lookback(self) -> int:
        """Samples of context before the first target: the top frame size."""
        return self.frame_sizes[0]

    def _level(self, codes: Tensor) -> Tensor:
        """Codes -> their level scaled to [-1, 1]: what the frame tiers read."""
        return codes.to(self.levels.dtype) * (2.0 / (self.q_levels - 1)) - 1.0

    def conditioning(self, codes: Tensor, state: State | None = None
                     ) -> tuple[Tensor, State]:
        """codes (B, F_0 + n) -> per-target conditioning (B, n, mlp_hidden), tier states.

        With n a multiple of F_0 the returned state continues exactly where the
        next chunk starts; otherwise the tiers have run past the last target.
        """
        b, total = codes.shape
        top = self.lookback
        n = total - top
        x = self._level(codes)
        cond: Tensor | None = None
        new_state: State = []
        for k, tier in enumerate(self.tiers):
            fs = tier.frame_size
            nf = -(-n // fs)
            frames = x[:, top - fs : top - fs + nf * fs].reshape(b, nf, fs)
            cond, s = tier(frames, None if cond is None else cond[:, :nf],
                           None if state is None else state[k])
            new_state.append(s)
        assert cond is not None
        return cond[:, :n], new_state

    def sample_logits(self, codes: Tensor, cond: Tensor) -> Tensor:
        """The sample MLP: codes (B, F_0 + n), conditioning (B, n, H) -> logits (B, n, Q).

        `mlp_in` over the embedded codes runs as a lookup in the folded table
        (models/samplernn_fold.py) where that is cheaper and `fold_mlp_in` is on: the
        same values and gradients to float32 rounding.
        """
        fs = self.frame_sizes[-1]
        window = codes[:, self.lookback - fs : -1]               # (B, n + fs - 1)
        if self.fold_mlp_in and folding_pays(cond.shape[0] * cond.shape[1], self.q_levels):
            h = folded_mlp_in(window, self.embedding.weight, self.mlp_in.weight,
                              self.mlp_in.bias)
        else:
            h = self.mlp_in(self.embedding(window).transpose(1, 2)).transpose(1, 2)
        return self.mlp(h + cond)

    def forward(self, codes: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """codes (B, F_0 + n) int64 -> logits for codes[:, F_0:] (B, n, Q), new state."""
        if codes.dim() != 2 or codes.shape[1] <= self.lookback:
            raise ValueError(f"codes must be (B, > {self.lookback}), got {tuple(codes.shape)}")
        cond, state = self.conditioning(codes, state)
        return self.sample_logits(codes, cond), state

    def quantize(self, samples: Tensor, split: str = "train") -> Tensor:
        """Normalised samples of `split` -> codes in [0, q_levels) of the original-scale
        audio (clamped to [-1, 1] first, as audio is)."""
        shift, scale = self.affine(split)
        original = samples.double() * scale + shift
        return quantize(original, self.q_levels, self.quantization).to(samples.device)

    def dequantize(self, codes: Tensor, split: str = "train",
                   dtype: torch.dtype | None = None) -> Tensor:
        """Codes -> their original-scale levels, in `split`'s normalised units."""
        shift, scale = self.affine(split)
        x = dequantize(codes, self.q_levels, self.quantization, dtype=torch.float64)
        return ((x - shift) / scale).to(dtype or torch.get_default_dtype()).to(codes.device)

    def teacher_forced_logits(self, samples: Tensor) -> Tensor:
        """samples (B, N) normalised -> logits (B, N - F_0, Q) for samples[:, F_0:], one pass."""
        return self(self.quantize(samples))[0]

    # ------------------------------------------------------------------ data
    def _codes(self, batch: Tensor, split: str = "train") -> tuple[Tensor, Tensor]:
        """A frames batch (B, T+1, x_len) -> codes and samples, both (B, F_0 + whole top
        frames): the (T+1)·x_len samples cut to the context plus whole top frames."""
        if batch.dim() != 3:
            raise ValueError(f"SampleRNN expects frames (B, T+1, x_len), got {tuple(batch.shape)}")
        self._check_data(batch.shape[-1])
        samples = batch.reshape(batch.shape[0], -1)
        top = self.lookback
        keep = top + (samples.shape[1] - top) // top * top
        if keep <= top:
            raise UserError(
                f"an example holds {samples.shape[1]} samples: SampleRNN needs more than "
                f"model.frame_sizes[0]={top} (raise data.seq_len or data.x_len)")
        samples = samples[:, :keep]
        return self.quantize(samples, split), samples

    def _check_data(self, x_len: int) -> None:
        ds = self.data_state
        if ds is not None:
            check_data(ds.repr_kind, ds.standardized, ds.data.get("hop"), x_len)

    def _chunk_len(self, n: int) -> int:
        return self.hparams.tbptt_steps * self.lookback if self.hparams.tbptt_steps else n

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        opt = self.optimizers()
        loss = self.train_batch(batch, lambda loss: self.optimizer_update(opt, loss, batch_idx))
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=batch.shape[0])
        return loss

    def train_batch(self, batch: Tensor, update: Callable[[Tensor], None]) -> Tensor:
        """One batch of truncated BPTT: `update(loss)` steps the optimiser once per chunk;
        returns the batch's mean loss (detached). `training_step` passes Lightning's
        manual optimisation; bench/bench_samplernn_train.py a bare PyTorch update, to
        measure what the framework adds."""
        codes, _ = self._codes(batch)
        top, q = self.lookback, self.q_levels
        n = codes.shape[1] - top

        def step(start: int, stop: int, state: State | None) -> tuple[Tensor, State]:
            logits, state = self(codes[:, start : stop + top], state)
            loss = F.cross_entropy(logits.reshape(-1, q),
                                   codes[:, start + top : stop + top].reshape(-1))
            update(loss)
            return loss.detach() * (stop - start), state

        return torch.stack(run_chunks(n, self._chunk_len(n), step)).sum() / n

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: Tensor, split: str) -> None:
        codes, samples = self._codes(batch, split)
        top = self.lookback
        n = codes.shape[1] - top
        shift, scale = self.affine(split)

        def step(start: int, stop: int, state: State | None) -> tuple[Tensor, State]:
            logits, state = self(codes[:, start : stop + top], state)
            target = codes[:, start + top : stop + top]
            log_p = torch.log_softmax(logits.double(), dim=-1)
            ce = -log_p.gather(-1, target.unsqueeze(-1)).sum()
            # the expected level (original scale) against the true sample, normalised units
            expected = (log_p.exp() @ self.levels.double() - shift) / scale
            truth = samples[:, start + top : stop + top].double()
            err = (expected - truth).square().sum()
            canonical = discrete_log_prob(log_p, truth * scale + shift, self.log_spread).sum()
            return torch.stack([ce, err, -canonical]), state

        # the same chunks as training: bounded memory
        ce, err, nll = torch.stack(run_chunks(n, self._chunk_len(n), step)).sum(0)
        self.accumulate({"loss": ce, "mse": err, "canonical": nll,
                         "count": torch.tensor(float(codes.shape[0] * n), dtype=torch.float64,
                                               device=codes.device)})

    def _eval_epoch_end(self, prefix: str) -> None:
        """Exact split-wide means per sample (sums and counts reduced over ranks)."""
        total = self.reduced_eval_sums()
        if total is None:
            return
        n = total.pop("count")
        loss = total["loss"] / n
        # Already reduced over ranks above: no sync_dist here.
        self.log(f"{prefix}/loss", loss, prog_bar=True)
        self.log_dict({f"{prefix}/bits_per_sample": total["canonical"] / n / LN2,
                       f"{prefix}/{self.own_grid_metric}": loss / LN2,
                       f"{prefix}/mse": total["mse"] / n})

    #: what its bits/sample are (AudioRNN with head=mse: "Gaussian-equivalent")
    bits_kind = "likelihood"

    @property
    def own_grid_metric(self) -> str:
        """The name of the bits on its own grid: bits_per_sample_mulaw256, …_linear256."""
        kind = "mulaw" if self.quantization == "mu_law" else "linear"
        return f"bits_per_sample_{kind}{self.q_levels}"

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
    def generate(self, seed: Tensor, n_samples: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None,
                 progress: ProgressFn | None = None,
                 return_logits: bool = False, top_p: float = 1.0,
                 return_log_likelihood: bool = False) -> Tensor | tuple[Tensor, ...]:
        """Continue B seeds (B, S) of normalised samples by `n_samples` -> (B, n_samples).

        The seed is cut to its last `S - S mod F_0` samples; all tiers are warmed on it
        in one pass, then each sample is drawn from `softmax(logits / temperature)`
        (temperature 0: argmax) with O(1) work: tier k steps only every F_k samples,
        carrying its state. The B sequences are generated together and independently.
        The draw is the inverse CDF of one uniform per stream and sample from `generator`
        (models/draw.py), in the C kernel or in its fallback alike: a seed gives the same
        codes with or without a compiler. `top_p` < 1 draws from the nucleus of that
        softmax (the fewest most likely levels holding `top_p` of its mass, renormalised);
        `top_p` = 1 is plain sampling, draw for draw.
        Output samples are dequantised (original-scale) levels in the train split's normalised
        units (what `quantize` reads; see `dequantize`), on the model's device,
        in the seed's dtype. `return_logits=True` also returns the logits each sample was
        drawn from, (B, n_samples, Q) (what the tests compare with `teacher_forced_logits`);
        `return_log_likelihood=True` (last) each stream's mean log-probability per
        sample of its codes under the model's own distribution, softmax(logits) at
        temperature 1 and untruncated, in nats, (B,) float64: what ranks candidates.
        """
        temperature = check_temperature(temperature)
        top_p = check_top_p(top_p)
        if seed.dim() != 2:
            raise ValueError(f"seed must be (B, S) samples, got shape {tuple(seed.shape)}")
        n_samples = positive_int(n_samples, "n_samples", minimum=0, error=ValueError)
        top = self.lookback
        s = seed.shape[1] // top * top
        if s == 0:
            raise UserError(
                f"seed.seconds too short: the seed has {seed.shape[1]} samples, SampleRNN "
                f"needs at least one top frame of model.frame_sizes[0]={top} samples")
        device = self.levels.device
        b = seed.shape[0]
        buf = torch.empty(b, s + n_samples, dtype=torch.long, device=device)
        buf[:, :s] = self.quantize(seed[:, seed.shape[1] - s :].to(device))
        logits_out = (torch.empty(b, n_samples, self.q_levels, device=device)
                      if return_logits else None)
        loglik = (torch.zeros(b, dtype=torch.float64, device=device)
                  if return_log_likelihood else None)
        state: list[Any] = [None] * len(self.tiers)
        if s > top:  # warm: the tiers consume every frame before the first target
            _, state = self.conditioning(buf[:, :s])
        # the per-sample loop (samplernn_step.py): folded tables, pre-drawn randomness,
        # frame tiers on every thread, each frame's samples in the C kernel
        loop = SampleLoop(self, b)
        loop.set_state(state)
        with cpu_backend(single_step=device.type == "cpu"):
            loop.run(buf, s, n_samples, temperature, generator, logits_out, progress, top,
                     top_p, loglik)
        out = self.dequantize(buf[:, s:], dtype=seed.dtype)
        extras = [t for t in (logits_out, loglik) if t is not None]
        if loglik is not None:
            extras[-1] = loglik / max(n_samples, 1)
        return (out, *extras) if extras else out


def check_data(repr_kind: str, standardize: bool, hop: int | None, x_len: int) -> None:
    """SampleRNN models raw samples read as one contiguous signal: `repr=time` without
    standardisation, and `data.hop` unset (= `data.x_len`). Config and model both ask here."""
    if repr_kind != "time" or standardize:
        what = f"repr={repr_kind}" + (" repr.standardize=true" if standardize else "")
        raise UserError(f"model.arch=samplernn with {what}: SampleRNN models raw samples; "
                        "use repr=time repr.standardize=false")
    if hop is not None and hop != x_len:
        raise UserError(f"data.hop={hop}: model.arch=samplernn reads frames as one "
                        f"contiguous signal; leave data.hop unset (= data.x_len={x_len})")


def check_frame_sizes(frame_sizes: Any) -> list[int]:
    try:
        sizes = list(frame_sizes)
    except TypeError:
        raise UserError(f"model.frame_sizes must be a list of integers, got {frame_sizes!r}") \
            from None
    if not sizes:
        raise UserError("model.frame_sizes must list at least one frame size, got []")
    sizes = [positive_int(v, "model.frame_sizes") for v in sizes]
    for upper, lower in zip(sizes[:-1], sizes[1:], strict=False):
        if upper % lower:
            raise UserError(
                f"model.frame_sizes={sizes}: each tier's frame size must be a multiple of "
                f"the next one's ({upper} is not a multiple of {lower})")
    return sizes
