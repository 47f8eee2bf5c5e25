"""The frame RNN's linear autoregressive path (`model.linear_ar`, models/linear_ar.py).

Against hand-written references: the output is the RNN head's plus `x[t] @ W + b` at the
head's location, started from the ridge fit it *is* the ridge prediction, off it is
today's model, gradients reach both paths, and checkpoints and configs carry it.
(Generation with the path: tests/test_generate.py, parametrised over it.)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from audiolstm.config import to_container, validate_train
from audiolstm.data.datamodule import AudioDataModule
from audiolstm.errors import UserError
from audiolstm.evaluation.baselines import fit_ridge_baseline, ridge_predict
from audiolstm.models.checkpoints import model_from_checkpoint
from audiolstm.models.frame_rnn import AudioRNN
from audiolstm.training.run import run
from tests.conftest import SMOKE, compose_cfg

D = 6


def _model(head: str = "mse", linear_ar: str | None = "zero", seed: int = 0,
           **kw) -> AudioRNN:
    """A small model whose linear path (if any) has random, non-symmetric weights."""
    torch.manual_seed(seed)
    m = AudioRNN(input_dim=D, hidden_sizes=[5, 4], head=head, linear_ar=linear_ar,
                 mixture_components=3, **kw)
    if m.linear_ar is not None:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            m.linear_ar.weight.copy_(torch.randn(D, D, generator=g) * 0.3)
            m.linear_ar.bias.copy_(torch.randn(D, generator=g))
    return m.eval()


def _without_path(m: AudioRNN) -> AudioRNN:
    """The same weights with the path removed: what the RNN head alone outputs."""
    rnn = copy.deepcopy(m)
    rnn.linear_ar = None
    return rnn


def _by_hand(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x (B, T, D) -> x[b, t] @ W + b, one frame and one output sample at a time."""
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        for t in range(x.shape[1]):
            for j in range(x.shape[2]):
                out[i, t, j] = sum(float(x[i, t, k]) * float(w[k, j].detach())
                                   for k in range(x.shape[2])) + float(b[j].detach())
    return out


@pytest.mark.parametrize("head", ["mse", "gaussian", "logistic_mixture"])
def test_output_is_the_heads_plus_the_linear_map_at_its_location(head: str) -> None:
    """Mutants caught: W applied transposed (`x @ W.T`: W is not symmetric), the path fed
    the previous frame instead of the current one, added to the scales or the mixture
    logits as well, or added to one mixture component only."""
    m = _model(head)
    x = torch.randn(2, 5, D)
    with torch.no_grad():
        out, _ = m(x)
        rnn, _ = _without_path(m)(x)
    lin = _by_hand(x, m.linear_ar.weight, m.linear_ar.bias)
    assert not torch.allclose(m.linear_ar.weight, m.linear_ar.weight.T)
    if head == "mse":
        want = rnn + lin
    elif head == "gaussian":  # mean ‖ log_scale: only the mean moves
        want = torch.cat([rnn[..., :D] + lin, rnn[..., D:]], dim=-1)
    else:  # logits ‖ means ‖ log_scales per sample, K = 3: every location moves
        want = rnn.clone()
        want[..., 3:6] += lin[..., None]
    assert out.shape == want.shape
    torch.testing.assert_close(out, want, rtol=0, atol=1e-5)
    if head == "logistic_mixture":  # one component (and its logit) dominating: its mean moves
        assert not torch.allclose(m.head.mean(out), m.head.mean(rnn))


def test_the_path_reads_the_clean_frame_in_training_mode() -> None:
    """Input noise and dropout are the RNN's regularisers: with the head silenced, a
    training-mode output is exactly `x @ W + b` (mutant caught: the path reading the
    noisy, dropped-out input)."""
    m = _model(input_noise=0.5, input_dropout=0.5).train()
    with torch.no_grad():
        m.head.weight.zero_()
        m.head.bias.zero_()
    x = torch.randn(3, 4, D)
    out, _ = m(x)
    assert torch.equal(out, x @ m.linear_ar.weight + m.linear_ar.bias)


def _pairs(seed: int = 0) -> torch.Tensor:
    """(n, 2, D) frame pairs of a noisy linear recursion (something for the ridge to fit)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(D, D, generator=g) * 0.4
    x = torch.randn(200, D, generator=g)
    return torch.stack([x, x @ a + 0.1 * torch.randn(200, D, generator=g)], dim=1)


@pytest.mark.parametrize("kind", ["ridge", "ridge_fixed"])
def test_started_at_the_ridge_fit_it_is_the_ridge_prediction(kind: str) -> None:
    """`init_linear_ar` loads the fit and zeroes the head, so the untrained model predicts
    exactly (bit for bit) what the ridge baseline does (mutants caught: W loaded
    transposed, the bias left at zero, the fit not loaded, the head left random)."""
    m = _model(linear_ar=kind)
    pairs = _pairs()
    m.fit_ridge(lambda: [pairs[:120], pairs[120:]])
    m.init_linear_ar()
    x = torch.randn(2, 7, D)
    with torch.no_grad():
        out, _ = m(x)
    fit = fit_ridge_baseline([pairs])
    w, b = fit.w, fit.b
    assert torch.allclose(m.linear_ar.weight, w, atol=1e-6)  # one batch or two: same fit
    assert torch.equal(out, ridge_predict(x, *m.ridge))
    assert b.abs().max() > 1e-3 and not torch.allclose(w, w.T)


def test_a_ridge_start_zeroes_the_gaussian_mean_and_leaves_the_mixture() -> None:
    """The Gaussian head starts with its mean at the ridge prediction and its scale as
    initialised (mutant: the whole projection zeroed, every scale 1); the mixture keeps its
    random locations (mutant: zeroed, its components identical for ever)."""
    pairs = _pairs()
    x = torch.randn(2, 5, D)
    g = _model(head="gaussian", linear_ar="ridge_fixed")
    log_scale_before = g.head.proj.bias[D:].clone()
    g.fit_ridge(lambda: [pairs])
    g.init_linear_ar()
    with torch.no_grad():
        out, _ = g(x)
    assert torch.equal(g.head.mean(out), ridge_predict(x, *g.ridge))
    assert torch.equal(g.head.proj.bias[D:], log_scale_before)
    assert g.head.proj.weight[D:].abs().min() > 0
    mix = _model(head="logistic_mixture", linear_ar="ridge_fixed")
    before = {k: v.clone() for k, v in mix.head.state_dict().items()}
    mix.fit_ridge(lambda: [pairs])
    mix.init_linear_ar()
    for k, v in mix.head.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_ridge_start_without_a_ridge_fit_is_refused() -> None:
    m = _model(linear_ar="ridge")
    with pytest.raises(UserError, match="model.linear_ar=ridge .*did not fit"):
        m.init_linear_ar()
    zero = _model(linear_ar="zero")
    before = zero.linear_ar.weight.clone()
    zero.fit_ridge(lambda: [_pairs()])
    zero.init_linear_ar()  # zero: the fit is evaluation only
    assert torch.equal(zero.linear_ar.weight, before)


def test_off_is_todays_model() -> None:
    """Off, the model has today's parameters, values and outputs for the same seed: the
    path is built last and at zero, drawing no random numbers (mutants caught: the path
    built before the layers, or with nn.Linear's random initialisation). The sums are
    pinned from the code before the option existed."""
    torch.manual_seed(0)
    off = AudioRNN(input_dim=D, hidden_sizes=[5, 4])
    torch.manual_seed(0)
    zero = AudioRNN(input_dim=D, hidden_sizes=[5, 4], linear_ar="zero")
    names = [k for k, _ in off.named_parameters()]
    assert not any("linear_ar" in k for k in names)
    assert [k for k, _ in zero.named_parameters()] == [*names, "linear_ar.weight",
                                                      "linear_ar.bias"]
    for k, v in off.state_dict().items():
        assert torch.equal(v, zero.state_dict()[k]), k
    assert off.num_params == 4 * 5 * (6 + 5) + 8 * 5 + 4 * 4 * (5 + 4) + 8 * 4 + 4 * 6 + 6
    assert zero.num_params == off.num_params + D * D + D
    total = sum(float(p.detach().double().sum()) for p in off.parameters())
    assert total == pytest.approx(TODAY_PARAM_SUM, abs=1e-9)
    x = torch.linspace(-1, 1, 2 * 3 * D).reshape(2, 3, D)
    with torch.no_grad():
        a, b = off.eval()(x)[0], zero.eval()(x)[0]
    assert torch.equal(a, b)
    assert float(a.double().sum()) == pytest.approx(TODAY_OUTPUT_SUM, abs=1e-9)


#: `AudioRNN(6, hidden_sizes=[5, 4])` at torch.manual_seed(0) before model.linear_ar existed
TODAY_PARAM_SUM = 8.977893234521616
TODAY_OUTPUT_SUM = -3.2348339334130287


def test_gradient_reaches_both_paths() -> None:
    """The linear path's gradient is the closed form `2 Xᵀ(out − y) / N` (mutant caught: a
    detached path), and the RNN's weights get gradient through the head."""
    m = _model(linear_ar="ridge").train()
    x, y = torch.randn(3, 4, D), torch.randn(3, 4, D)
    out, _ = m(x)
    F.mse_loss(out, y).backward()
    xf, rf = x.reshape(-1, D), (out - y).detach().reshape(-1, D)
    n = rf.numel()
    torch.testing.assert_close(m.linear_ar.weight.grad, 2 * xf.T @ rf / n)
    torch.testing.assert_close(m.linear_ar.bias.grad, 2 * rf.sum(0) / n)
    for name in ("layers.0.weight_ih_l0", "layers.1.weight_hh_l0", "head.weight"):
        grad = dict(m.named_parameters())[name].grad
        assert grad is not None and grad.abs().max() > 0, name


def test_a_fixed_path_gets_no_gradient_and_the_rnn_does() -> None:
    """ridge_fixed: the path is the ridge fit and stays so (mutant caught: the path left
    trainable); the RNN still learns."""
    m = _model(linear_ar="ridge_fixed").train()
    assert not any(p.requires_grad for p in m.linear_ar.parameters())
    out, _ = m(torch.randn(2, 3, D))
    F.mse_loss(out, torch.randn(2, 3, D)).backward()
    assert m.linear_ar.weight.grad is None and m.linear_ar.bias.grad is None
    assert m.head.weight.grad.abs().max() > 0 and m.layers[0].weight_ih_l0.grad.abs().max() > 0


def test_a_bad_value_and_a_samplernn_path_are_refused() -> None:
    with pytest.raises(UserError, match=r"model.linear_ar='on' is not one of null, zero, "
                                        "ridge, ridge_fixed"):
        validate_train(compose_cfg(["model.linear_ar=on"]))
    with pytest.raises(UserError, match="model.linear_ar='zero' has no effect: model.arch="
                                        "samplernn"):
        validate_train(compose_cfg(["model=samplernn_2tier", "model.linear_ar=zero"]))
    with pytest.raises(UserError, match="needs ridge_baseline=true"):
        validate_train(compose_cfg(["ridge_baseline=false"]))
    with pytest.raises(UserError, match="data.x_len=8000 with repr=time gives 8000 input "
                                        "features, above .* 4096"):
        validate_train(compose_cfg(["frames=x8000_10s"]))
    with pytest.raises(UserError, match="gives 4400 input features"):
        validate_train(compose_cfg(["repr=fft", "data.x_len=2200"]))
    validate_train(compose_cfg(["frames=x8000_10s", "model.linear_ar=zero"]))
    validate_train(compose_cfg(["ridge_baseline=false", "model.linear_ar=null"]))
    with pytest.raises(UserError, match=r"ridge_alpha=-1.0 must be a finite penalty >= 0"):
        validate_train(compose_cfg(["ridge_alpha=-1"]))
    with pytest.raises(UserError, match=r"ridge_alpha=2.0 is read only with ridge_baseline"):
        validate_train(compose_cfg(["ridge_baseline=false", "model.linear_ar=null",
                                    "ridge_alpha=2"]))
    validate_train(compose_cfg(["ridge_alpha=0"]))


def test_default_model_has_the_path_and_the_seed_presets_do_not() -> None:
    assert compose_cfg([]).model.linear_ar == "ridge_fixed"
    assert compose_cfg([]).model.hidden_sizes == [300, 300, 300]
    for preset in ("seed000", "seed001_300x3", "gruv", "real_audio"):
        assert compose_cfg([f"experiment={preset}"]).model.linear_ar is None, preset
    assert compose_cfg(["model=lstm_300x3"]).model.linear_ar is None


@pytest.mark.parametrize("kind,lr", [("ridge", 0.0), ("ridge_fixed", 1e-3)])
def test_a_run_starts_at_the_ridge_fit_and_its_checkpoint_round_trips(
        tmp_path: Path, kind: str, lr: float) -> None:
    """Through train.py's run (`ridge` with a zero learning rate; `ridge_fixed` learning):
    the checkpoint's path is, to the bit, the ridge fit on the training frame pairs, made
    again here (mutants caught: run not calling `init_linear_ar`, a fixed path trained,
    the path left out of the checkpoint or not loaded)."""
    cfg = compose_cfg([*SMOKE, "model.hidden_sizes=[16]", "data.x_len=200",
                       f"model.linear_ar={kind}", f"model.optimizer.lr={lr}",
                       "~callbacks.sample_generation", "trainer.max_epochs=1"], tmp_path)
    run(cfg)
    dm = AudioDataModule(to_container(cfg.data), to_container(cfg.norm),
                         to_container(cfg.repr), seed=cfg.seed)
    dm.setup("fit")
    # the run chose the penalty on the validation pairs (ridge_alpha=null, the default)
    fit = fit_ridge_baseline(dm.train_frame_pairs(), None, dm.val_frame_pairs())
    assert fit.chosen_by == "validation" and fit.alpha != 1.0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["ridge_alpha"], summary["ridge_alpha_chosen_by"]) == (fit.alpha,
                                                                          "validation")
    w, b = fit.w, fit.b
    ckpt = tmp_path / "checkpoints/last.ckpt"
    model = model_from_checkpoint(ckpt)
    assert model.hparams.linear_ar == kind
    assert torch.equal(model.linear_ar.weight, w) and torch.equal(model.linear_ar.bias, b)
    assert w.abs().max() > 0.01
