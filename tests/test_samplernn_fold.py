"""SampleRNN's folded `mlp_in` (models/samplernn_fold.py) against the plain embedding +
convolution, and the fused optimiser it trains with (issue 21)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from audiolstm.models import samplernn_fold
from audiolstm.models.base import fused_kwargs
from audiolstm.models.samplernn import SampleRNN
from audiolstm.models.samplernn_fold import FoldedInput, folded_index, folded_mlp_in, folding_pays
from tests.conftest import quiet_trainer

TIERS = {"2-tier": [4], "3-tier": [8, 2]}


def _model(frame_sizes: list[int], cell: str, dtype: torch.dtype) -> SampleRNN:
    """Chunks of 16 samples (tbptt_steps top frames), 32 levels."""
    torch.manual_seed(0)
    model = SampleRNN(frame_sizes=frame_sizes, hidden=12, mlp_hidden=16, q_levels=32,
                      embed_dim=6, cell=cell, rnn_layers=2,
                      tbptt_steps=16 // frame_sizes[0]).to(dtype)
    with torch.no_grad():  # logits that depend on the input (PyTorch's init is nearly flat)
        for p in model.parameters():
            p.mul_(3.0)
    return model


def _chunk_grads(model: SampleRNN, batch: torch.Tensor) -> list[tuple[float, dict]]:
    """Every chunk's loss and every parameter's gradient, through `train_batch` (the
    chunk loop `training_step` runs), without optimiser steps."""
    seen: list[tuple[float, dict]] = []

    def update(loss: torch.Tensor) -> None:
        model.zero_grad(set_to_none=True)
        loss.backward()
        seen.append((loss.item(), {k: p.grad.clone() for k, p in model.named_parameters()}))

    model.train_batch(batch, update)
    return seen


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("tiers", ["2-tier", "3-tier"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_folded_training_equals_the_plain_path(tiers: str, cell: str,
                                               dtype: torch.dtype) -> None:
    """Every chunk's loss and every parameter's gradient (embedding, `mlp_in` weight and
    bias included) equal the plain path's: to 1e-12 in float64 (measured ~1e-15), to
    float32 rounding in float32 (measured < 1e-6; 2e-5 allowed). Caught, tried once:
    `folded_index` pairing code c[t + p] with tap F - 1 - p (the convolution flipped:
    the chunk losses differ by 0.02-1.5 nats)."""
    fs = TIERS[tiers]
    fast, plain = _model(fs, cell, dtype), _model(fs, cell, dtype)
    plain.fold_mlp_in = False
    g = torch.Generator().manual_seed(1)
    # 5 examples of 80 samples: 4 (8) of context, 4 chunks of 16 targets and one of 12 (8)
    batch = torch.rand(5, 5, 16, generator=g, dtype=dtype) * 2 - 1
    assert folding_pays(5 * 8, 32) and not folding_pays(32, 32)  # every chunk is folded
    got, want = _chunk_grads(fast, batch), _chunk_grads(plain, batch)
    assert len(got) == len(want) == 5
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for (loss, grads), (loss_ref, grads_ref) in zip(got, want, strict=True):
        assert abs(loss - loss_ref) <= tol * abs(loss_ref)
        assert grads.keys() == grads_ref.keys()
        for name, ref in grads_ref.items():
            assert ref.abs().max() > 0, name  # every parameter is in the graph
            err = (grads[name] - ref).norm() / ref.norm()
            assert err <= tol, (name, err.item())


def test_folded_forward_equals_the_convolution_at_every_position() -> None:
    """A hand-made window: each output is the bias plus the F taps' W_p @ emb[c[t+p]],
    computed here by the slicing loop."""
    torch.manual_seed(0)
    q, e, h, f = 5, 3, 4, 3
    emb, w, bias = torch.randn(q, e), torch.randn(h, e, f), torch.randn(h)
    window = torch.tensor([[0, 4, 4, 1, 2, 3, 0], [1, 1, 1, 1, 1, 1, 1]])
    out = folded_mlp_in(window, emb, w, bias)
    n = window.shape[1] - f + 1
    for b in range(2):
        for t in range(n):
            ref = bias + sum(w[:, :, p] @ emb[window[b, t + p]] for p in range(f))
            torch.testing.assert_close(out[b, t], ref)
    index = folded_index(window, f)  # row c·F + p: codes 4, 4, 1 at taps 0, 1, 2
    assert index[1].tolist() == [4 * f + 0, 4 * f + 1, 1 * f + 2]
    assert index[n].tolist() == [1 * f + 0, 1 * f + 1, 1 * f + 2]  # the second stream


def test_table_gradient_block_by_block_equals_the_one_hot_products(monkeypatch) -> None:
    """The scatter-add runs over blocks of rows (5 here: 4 x 256, 76): the table's
    gradient equals Σ_p onehot(index[:, p])ᵀ @ grad, and the bias's the column sums.
    Caught, tried once: every block scattering the first block's index columns."""
    monkeypatch.setattr(samplernn_fold, "SCATTER_BLOCK_BYTES", 1)  # the floor: 256 rows
    torch.manual_seed(0)
    q, f, h, n = 7, 3, 5, 1100
    table = torch.randn(q * f, h, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(h, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, q, (n, f)) * f + torch.arange(f)
    out = FoldedInput.apply(table, bias, index, f)
    grad = torch.randn(n, h, dtype=torch.float64)
    out.backward(grad)
    onehot = F.one_hot(index, q * f).to(torch.float64)  # (n, f, Q·F)
    ref = sum(onehot[:, p].T @ grad for p in range(f))
    torch.testing.assert_close(table.grad, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(bias.grad, grad.sum(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(out, sum(table[index[:, p]] for p in range(f)) + bias)


def test_table_gradient_accumulates_in_float32_under_bf16() -> None:
    """4096 targets all read the same rows: each row's gradient is exactly 4096 (summed
    in float32, then cast). Summed in bf16 (8-bit mantissa) it would stop at 256."""
    table = torch.zeros(2 * 3, 4, dtype=torch.bfloat16, requires_grad=True)  # Q=2, F=3
    index = torch.tensor([[1 * 3 + 0, 1 * 3 + 1, 1 * 3 + 2]]).expand(4096, 3).contiguous()
    out = FoldedInput.apply(table, None, index, 3)
    out.backward(torch.ones_like(out))
    grad = table.grad.float()
    assert grad[3:].eq(4096).all() and grad[:3].eq(0).all()


def test_fused_optimizer_where_the_node_leaves_it_open() -> None:
    def factory(**node):
        return instantiate({"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.1} | node)

    assert fused_kwargs(factory()) == {"fused": True}
    assert fused_kwargs(factory(fused=False)) == {}  # the node's choice stands
    assert fused_kwargs(factory(foreach=True)) == {}
    assert fused_kwargs(instantiate({"_target_": "torch.optim.RMSprop", "_partial_": True})) == {}
    model = _model([4], "gru", torch.float32)
    assert model.configure_optimizers().param_groups[0]["fused"] is True
    # Lightning's mixed-precision plugins refuse to clip a fused optimiser's gradients
    # (test_precision.py::test_bf16_mixed_trains_samplernn_with_tbptt trains through it)
    model.trainer = quiet_trainer(precision="bf16-mixed")
    assert not model.configure_optimizers().param_groups[0]["fused"]
    model.trainer = None
    model.hparams.optimizer = {"_target_": "torch.optim.Adam", "_partial_": True,
                               "fused": False}
    assert not model.configure_optimizers().param_groups[0]["fused"]


def test_plain_path_below_the_break_even() -> None:
    """With no more targets than levels the convolution is cheaper: the table is not
    built (its gradient would be all the work)."""
    model = _model([4], "gru", torch.float32)
    codes = torch.randint(0, 32, (1, 4 + 32))
    calls = []
    original = FoldedInput.forward

    def spy(*args):
        calls.append(1)
        return original(*args)

    FoldedInput.forward = staticmethod(spy)
    try:
        model(codes)
        assert not calls
        model(torch.randint(0, 32, (2, 4 + 32)))
        assert calls
    finally:
        FoldedInput.forward = staticmethod(original)
    logits = model(codes)[0]
    assert logits.shape == (1, 32, 32) and F.log_softmax(logits, -1).isfinite().all()
