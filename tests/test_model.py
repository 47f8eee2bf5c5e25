"""AudioRNN: initialisation, train/eval behaviour, truncated BPTT, evaluation baselines."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from audiolstm.data.normalize import Normalizer
from audiolstm.data.state import DataState
from audiolstm.data.windows import identity_collate
from audiolstm.models.frame_rnn import AudioRNN, tbptt_step
from tests.conftest import FramesDataset, quiet_trainer


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bias", [0.0, 1.0, 3.0])
def test_forget_bias_effective_value(cell: str, bias: float) -> None:
    model = AudioRNN(input_dim=8, cell=cell, hidden_sizes=[5, 7], forget_bias=bias)
    for layer in model.layers:
        h = layer.hidden_size
        effective = layer.bias_ih_l0 + layer.bias_hh_l0
        assert torch.equal(effective[h : 2 * h], torch.full((h,), bias))
        # the other gates keep PyTorch's random init
        assert not torch.all(effective[:h] == 0)


def test_forget_bias_none_keeps_default_init() -> None:
    torch.manual_seed(0)
    model = AudioRNN(input_dim=4, hidden_sizes=[6], forget_bias=None)
    b = model.layers[0].bias_ih_l0[6:12] + model.layers[0].bias_hh_l0[6:12]
    assert b.abs().max() < 2 / math.sqrt(6) and b.std() > 0


def test_per_layer_sizes_and_head() -> None:
    model = AudioRNN(input_dim=10, hidden_sizes=[4, 6, 3])
    assert [layer.hidden_size for layer in model.layers] == [4, 6, 3]
    assert [layer.input_size for layer in model.layers] == [10, 4, 6]
    y, state = model(torch.randn(2, 5, 10))
    assert y.shape == (2, 5, 10) and len(state) == 3


def test_noise_and_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    model = AudioRNN(input_dim=6, hidden_sizes=[8, 8], input_noise=0.5, input_dropout=0.5,
                     dropout=0.5)
    x = torch.randn(3, 4, 6)
    model.eval()
    a, _ = model(x)
    b, _ = model(x)
    assert torch.equal(a, b)  # deterministic in eval
    model.train()
    c, _ = model(x)
    d, _ = model(x)
    assert not torch.allclose(c, d) and not torch.allclose(a, c)


def test_noise_alone_is_gaussian_with_sigma() -> None:
    model = AudioRNN(input_dim=1, hidden_sizes=[1], input_noise=0.1)
    seen = []
    model.input_dropout.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    x = torch.zeros(1, 20000, 1)
    model.train()
    model(x)
    assert abs(seen[0].std().item() - 0.1) < 0.005
    model.eval()
    model(x)
    assert torch.equal(seen[1], x)


def test_tbptt_updates_per_chunk_and_no_gradient_crosses_chunks() -> None:
    torch.manual_seed(0)
    model = AudioRNN(input_dim=3, hidden_sizes=[4, 4], forget_bias=3.0)
    x = torch.randn(2, 10, 3, requires_grad=True)
    y = torch.randn(2, 10, 3)
    grads = []

    def update(loss: torch.Tensor) -> None:
        loss.backward()
        grads.append(x.grad.clone())

    tbptt_step(model, x, y, 4, update)
    assert len(grads) == math.ceil(10 / 4)
    # chunk k's loss must not reach inputs of earlier chunks
    for k in range(1, 3):
        before = grads[k - 1][:, : 4 * k]
        assert torch.equal(grads[k][:, : 4 * k], before)
        assert grads[k][:, 4 * k : 4 * (k + 1)].abs().sum() > 0
    # without truncation the last frame's loss reaches the first input
    x.grad = None
    full = []
    tbptt_step(model, x, y, None, lambda loss: (loss.backward(), full.append(x.grad.clone())))
    assert len(full) == 1 and full[0][:, 0].abs().sum() > 0


def test_tbptt_loss_equals_full_forward_loss() -> None:
    """Detaching changes gradients, not values: the logged loss is the plain MSE."""
    torch.manual_seed(1)
    model = AudioRNN(input_dim=3, hidden_sizes=[5])
    x, y = torch.randn(2, 9, 3), torch.randn(2, 9, 3)
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(model(x)[0], y)
        got = tbptt_step(model, x, y, 4, lambda loss: None)
    assert torch.allclose(got, expected, atol=1e-6)





@pytest.mark.parametrize("tbptt,expected", [(None, 1), (3, 3), (4, 2), (7, 1)])
def test_optimizer_steps_per_batch(tbptt: int | None, expected: int) -> None:
    frames = torch.randn(8, 8, 3)  # seq_len 7
    model = AudioRNN(input_dim=3, hidden_sizes=[4], tbptt_steps=tbptt)
    loader = DataLoader(FramesDataset(frames), batch_size=4, collate_fn=identity_collate)
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(model, loader)
    assert trainer.global_step == 2 * expected  # two batches


def test_validation_logs_baselines_on_hand_made_batch() -> None:
    # one example, D=2, seq_len 2: frames f0, f1, f2 -> inputs (f0, f1), targets (f1, f2)
    frames = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.0, 4.0]]])
    mse_zero = (9 + 1 + 0 + 16) / 4
    mse_pers = ((3 - 1) ** 2 + (-1 - 2) ** 2 + (0 - 3) ** 2 + (4 + 1) ** 2) / 4
    model = AudioRNN(input_dim=2, hidden_sizes=[3])
    with torch.no_grad():
        pred, _ = model(frames[:, :-1])
        mse_model = torch.nn.functional.mse_loss(pred, frames[:, 1:]).item()
    loader = DataLoader(FramesDataset(frames), batch_size=1, collate_fn=identity_collate)
    (res,) = quiet_trainer().validate(model, loader, verbose=False)
    assert res["val/mse_zero"] == pytest.approx(mse_zero)
    assert res["val/mse_persistence"] == pytest.approx(mse_pers)
    assert res["val/loss"] == pytest.approx(mse_model, rel=1e-5)
    assert res["val/rel_zero"] == pytest.approx(mse_model / mse_zero, rel=1e-5)
    assert res["val/rel_persistence"] == pytest.approx(mse_model / mse_pers, rel=1e-5)


def test_validation_means_are_exact_over_uneven_batches() -> None:
    torch.manual_seed(0)
    frames = torch.randn(5, 4, 3)
    model = AudioRNN(input_dim=3, hidden_sizes=[3])
    loader = DataLoader(FramesDataset(frames), batch_size=2, collate_fn=identity_collate)  # 2, 2, 1
    (res,) = quiet_trainer().validate(model, loader, verbose=False)
    assert res["val/mse_zero"] == pytest.approx((frames[:, 1:] ** 2).mean().item(), rel=1e-6)


def test_non_finite_loss_is_a_clear_error() -> None:
    from audiolstm.models.base import NonFiniteLossError

    frames = torch.randn(4, 5, 3)
    frames[0, 2, 1] = float("nan")
    model = AudioRNN(input_dim=3, hidden_sizes=[4])
    loader = DataLoader(FramesDataset(frames), batch_size=4, collate_fn=identity_collate)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="non-finite training loss"):
        quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, loader)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no step taken with NaN


def test_scheduler_and_rmsprop_from_config() -> None:
    model = AudioRNN(
        input_dim=3, hidden_sizes=[4],
        optimizer={"_target_": "torch.optim.RMSprop", "_partial_": True, "lr": 0.01},
        scheduler={"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True,
                   "step_size": 1, "gamma": 0.5},
    )
    loader = DataLoader(FramesDataset(torch.randn(4, 4, 3)), batch_size=4, collate_fn=identity_collate)
    trainer = quiet_trainer(max_epochs=3, limit_val_batches=0)
    trainer.fit(model, loader)
    opt = trainer.optimizers[0]
    assert isinstance(opt, torch.optim.RMSprop)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**3)


@pytest.mark.parametrize("head", ["gaussian", "logistic_mixture"])
def test_probabilistic_heads_train_and_feed_back_the_mean_at_temperature_zero(head: str) -> None:
    torch.manual_seed(0)
    model = AudioRNN(input_dim=4, hidden_sizes=[6], head=head).eval()
    out, _ = model(torch.rand(2, 3, 4) * 2 - 1)
    assert torch.equal(model.next_frame(out, 0.0), model.head.mean(out))
    a, b = model.next_frame(out, 1.0), model.next_frame(out, 1.0)
    assert not torch.equal(a, b)  # samples
    frames = torch.rand(4, 6, 4) * 2 - 1
    loader = DataLoader(FramesDataset(frames), batch_size=4, collate_fn=identity_collate)
    model.data_state = DataState(
        data={"x_len": 4}, normalizer_state=Normalizer("std", 0.0, 0.5, mean=0.0).state_dict())
    quiet_trainer(max_epochs=2, limit_val_batches=1).fit(model, loader, loader)
    res = quiet_trainer().validate(model, loader, verbose=False)[0]
    assert "val/bits_per_sample" in res and math.isfinite(res["val/bits_per_sample"])
    assert res["val/mse"] != res["val/loss"]  # loss is the NLL, mse is of the mean
    if head == "logistic_mixture":  # the default 256 cells over the original [-1, 1]
        assert model.head.grid == (-2.0, 2.0)
        assert res["val/bits_per_sample_linear256"] == pytest.approx(
            res["val/bits_per_sample"], rel=1e-6)


class RecordingSGD(torch.optim.SGD):
    """SGD that records the total gradient norm it is asked to step with (`norms`)."""

    def step(self, closure=None):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        self.norms = [*getattr(self, "norms", []), float(torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g) for g in grads])))]
        return super().step(closure)


@pytest.mark.parametrize("arch", ["frame_rnn", "samplernn"])
def test_gradient_clipping_caps_the_norm_the_optimiser_sees(arch: str) -> None:
    from audiolstm.models.registry import build_model

    opt = {"_target_": "tests.test_model.RecordingSGD", "_partial_": True, "lr": 0.0}
    seen = {}
    for clip in (None, 0.05):
        torch.manual_seed(0)
        if arch == "frame_rnn":
            model = AudioRNN(input_dim=3, hidden_sizes=[4], grad_clip=clip, optimizer=opt)
            frames = 100.0 * torch.randn(4, 5, 3)  # large errors: large gradients
        else:
            model = build_model(8, {"arch": "samplernn", "frame_sizes": [4], "hidden_sizes": [6],
                                    "mlp_hidden": 8, "embed_dim": 4, "q_levels": 16,
                                    "grad_clip": clip, "optimizer": opt})
            frames = torch.rand(4, 3, 8) * 2 - 1
        loader = DataLoader(FramesDataset(frames), batch_size=4, collate_fn=identity_collate)
        trainer = quiet_trainer(max_epochs=1, limit_val_batches=0)
        trainer.fit(model, loader)
        seen[clip] = trainer.optimizers[0].norms
    assert len(seen[None]) == len(seen[0.05]) == 1
    assert seen[None][0] > 0.05  # it was larger ...
    assert seen[0.05][0] == pytest.approx(0.05, rel=1e-5)  # ... and was cut to grad_clip


def test_zero_baseline_is_the_training_mean_in_every_scheme() -> None:
    """Under minmax01 zero is the training minimum: the baseline must predict the mean."""
    from audiolstm.data.normalize import fit_normalizer

    g = torch.Generator().manual_seed(0)
    train = 0.3 + 0.1 * torch.rand(4000, generator=g, dtype=torch.float64)
    sig = 0.3 + 0.1 * torch.rand(2 * 8 + 4, generator=g, dtype=torch.float64)
    for scheme in ("minmax01", "none", "std", "minmax"):
        norm = fit_normalizer(scheme, train.numpy())
        m = norm.train_mean()
        assert m == pytest.approx((float(train.mean()) - norm.shift) / norm.scale, abs=1e-12)
        y = torch.as_tensor(norm.transform(sig.numpy())).float()
        for hop in (4, 2):
            frames = torch.stack([y[hop * k : hop * k + 4] for k in range(5)])[None]
            model = AudioRNN(input_dim=4, hidden_sizes=[3])
            model.data_state = DataState(data={"hop": hop, "x_len": 4}, repr={"kind": "time"},
                                         normalizer_state=norm.state_dict())
            loader = DataLoader(FramesDataset(frames), batch_size=1,
                                collate_fn=identity_collate)
            res = quiet_trainer().validate(model, loader, verbose=False)[0]
            target = frames[:, 1:].double()
            assert res["val/mse_zero"] == pytest.approx(((target - m) ** 2).mean().item(),
                                                        rel=1e-5), scheme
            if hop == 2:  # copy the known overlap, the mean for the new samples
                new = ((target[..., 2:] - m) ** 2).mean().item() / 2
                assert res["val/mse_copy_overlap"] == pytest.approx(new, rel=1e-5), scheme


def test_stft_loss_options() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 128), torch.randn(2, 3, 128)
    mse = AudioRNN(input_dim=128, hidden_sizes=[4], loss="mse")
    stft = AudioRNN(input_dim=128, hidden_sizes=[4], loss="stft")
    both = AudioRNN(input_dim=128, hidden_sizes=[4], loss="mse+stft", stft_weight=0.5)
    assert stft.objective(y, y) == 0
    assert both.objective(x, y) == pytest.approx(
        (mse.objective(x, y) + 0.5 * stft.objective(x, y)).item())
    with pytest.raises(Exception, match="model.loss"):
        AudioRNN(input_dim=4, hidden_sizes=[4], head="gaussian", loss="stft")


def test_scheduled_sampling_swaps_inputs_for_own_predictions() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 6, 4)
    never = AudioRNN(input_dim=4, hidden_sizes=[5], scheduled_sampling=0.0)
    assert torch.equal(never._scheduled_inputs(x), x)
    always = AudioRNN(input_dim=4, hidden_sizes=[5], scheduled_sampling=1.0)
    mixed = always._scheduled_inputs(x)
    with torch.no_grad():
        own = always(x)[0][:, :-1]
    assert torch.equal(mixed[:, 0], x[:, 0]) and torch.allclose(mixed[:, 1:], own)


def test_overlap_metrics_when_frames_overlap() -> None:
    # frames of 4 samples, hop 2: target frame t repeats 2 samples of input frame t
    sig = torch.randn(2 * 8 + 2)
    frames = torch.stack([sig[2 * k : 2 * k + 4] for k in range(8)])[None]
    model = AudioRNN(input_dim=4, hidden_sizes=[3])
    model.data_state = DataState(data={"hop": 2, "x_len": 4}, repr={"kind": "time"})
    loader = DataLoader(FramesDataset(frames), batch_size=1, collate_fn=identity_collate)
    res = quiet_trainer().validate(model, loader, verbose=False)[0]
    y = frames[:, 1:]
    assert res["val/mse_copy_overlap"] == pytest.approx((y[..., 2:] ** 2).mean().item() / 2,
                                                        rel=1e-5)
    with torch.no_grad():
        pred = model(frames[:, :-1])[0]
    assert res["val/mse_new"] == pytest.approx(((pred - y)[..., 2:] ** 2).mean().item(), rel=1e-5)
