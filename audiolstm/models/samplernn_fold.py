"""SampleRNN's `mlp_in` over embedded codes as a table lookup, for training (issue 21).

Why: the sample MLP's first layer is a width-F convolution over the embeddings of the
last F codes, F·E·H multiply-adds per sample (at the peer-matched size, F = 16 and
E = H = 256, ~80 % of the model's arithmetic). The embedding is linear before it, so

    mlp_in(emb(c))[t] = b + Σ_p W_p @ emb[c[t - F + p]] = b + Σ_p table[p, c[t - F + p]]

with `table[p] = emb.weight @ W_p.T` (F·Q·H floats). Building the table costs F·Q·E·H
once per optimiser step; the plain convolution costs F·E·H per *sample*, so the table
wins whenever a chunk holds more samples than there are levels (`folding_pays`). Per
sample the forward is then a sum of F gathered rows (`embedding_bag`, F·H adds) and the
backward a scatter-add of the output's gradient into the table's gradient (F·H adds);
autograd maps the table's gradient back to `emb.weight` and `mlp_in`'s weight and bias
once per step through `fold_table`'s einsum: the chain rule, so losses and every
gradient equal the plain path's to float32 rounding (the same sums, in another order).

Generation folds the same table (models/samplernn_step.py) without gradients.

Measured (bench/RESULTS.md, "SampleRNN training"): at F = 16, E = H = Q = 256, 16 × 1024
samples, forward + backward of the layer 370 ms plain, ~25 ms folded.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from audiolstm.models.base import at_least_float32

__all__ = ["FoldedInput", "fold_table", "folded_index", "folded_mlp_in", "folding_pays"]


def folding_pays(samples: int, q_levels: int) -> bool:
    """Whether the table is cheaper than the convolution for `samples` targets.

    Both sides scale with F·E·H: the table costs Q of those to build (and 2Q in the
    backward), the convolution one per sample (2 per sample backward); the gather and
    scatter add F·H per sample, small beside E·F·H. Ties go to the plain path.
    """
    return samples > q_levels


def fold_table(emb_weight: Tensor, conv_weight: Tensor) -> Tensor:
    """emb (Q, E), conv weight (H, E, F) -> table (Q·F, H), differentiable: row `c·F + p`
    is `W_p @ emb[c]`.

    One matmul, emb @ W laid out (E, F·H), whose output is already the table: rows by
    code then tap, so neither the product nor its gradient is permuted (the F·Q·H floats
    are the largest tensors of a step at small chunks).
    """
    q, _ = emb_weight.shape
    h, e, f = conv_weight.shape
    return (emb_weight @ conv_weight.permute(1, 2, 0).reshape(e, f * h)).view(q * f, h)


def folded_index(window: Tensor, frame: int) -> Tensor:
    """codes window (B, n + F - 1) -> table rows (B·n, F): row p of target t is
    `c[t + p]·F + p`, the window's F codes before the target, each at its tap."""
    b, total = window.shape
    n = total - frame + 1
    taps = torch.arange(frame, device=window.device)
    return (window.unfold(1, frame, 1) * frame + taps).reshape(b * n, frame)


#: rows of the output's gradient scattered per block, by bytes: each block is read once
#: per tap, so it should stay in a core's L2 (measured, 1 thread, F = 16, H = 256: N =
#: 16384 rows 30 -> 17 ms, N = 131072 (B = 128) 690 -> 150 ms; from 512 to 2048 rows
#: alike; N = 2048 (experiment=samplernn) 2.2 ms in one call, 2.6 in two blocks)
SCATTER_BLOCK_BYTES = 1 << 20


class FoldedInput(torch.autograd.Function):
    """Gather-sum forward, scatter-add backward: `out[i] = bias + Σ_p table[index[i, p]]`.

    `embedding_bag`'s own backward sorts the B·n·F indices (measured ~2.5× slower than
    this one); here each of the F index columns is an `index_add_` of the output's
    gradient into the table's, block by block of rows (`SCATTER_BLOCK_BYTES`),
    accumulated in float32 at least, whatever the table's dtype (a bf16 table under
    autocast would otherwise lose the sums of thousands of rows) and cast back once.
    The bias's gradient is the sum of the table gradient's tap-0 rows: every target
    holds exactly one of them.
    """

    @staticmethod
    def forward(ctx: Any, table: Tensor, bias: Tensor | None, index: Tensor,
                frame: int) -> Tensor:
        ctx.save_for_backward(index)
        ctx.table_shape, ctx.table_dtype, ctx.frame = table.shape, table.dtype, frame
        ctx.bias_dtype = None if bias is None else bias.dtype
        out = F.embedding_bag(index, table, mode="sum")
        return out if bias is None else out.add_(bias)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (index,) = ctx.saved_tensors
        src = at_least_float32(grad_out).contiguous()
        grad = src.new_zeros(ctx.table_shape)
        columns = index.t().contiguous()
        rows = max(256, SCATTER_BLOCK_BYTES // (src.shape[1] * src.element_size()))
        if src.shape[0] <= 4 * rows:  # a few blocks: the calls cost more than they save
            rows = src.shape[0]
        for start in range(0, src.shape[0], rows):  # a block of the gradient stays in L2
            block = src[start : start + rows]
            for column in columns[:, start : start + rows]:
                grad.index_add_(0, column, block)
        grad_bias = None
        if ctx.bias_dtype is not None and ctx.needs_input_grad[1]:
            grad_bias = grad.view(-1, ctx.frame, grad.shape[-1])[:, 0].sum(0).to(ctx.bias_dtype)
        grad_table = grad.to(ctx.table_dtype) if ctx.needs_input_grad[0] else None
        return grad_table, grad_bias, None, None


def folded_mlp_in(window: Tensor, emb_weight: Tensor, conv_weight: Tensor,
                  bias: Tensor | None) -> Tensor:
    """`conv1d(embedding(window).T, conv_weight, bias).T` by the table: (B, n + F - 1)
    codes -> (B, n, H), with the plain path's value and gradients."""
    h, _, f = conv_weight.shape
    b, total = window.shape
    table = fold_table(emb_weight, conv_weight)
    out = FoldedInput.apply(table, bias, folded_index(window, f), f)
    return out.view(b, total - f + 1, h)
