"""Ridge baseline against lstsq and the augmented closed form; copy-the-overlap baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiolstm.evaluation.baselines import (
    RIDGE_RELATIVE_ALPHAS,
    RidgeAccumulator,
    choose_ridge,
    copy_overlap_mse,
    copy_overlap_predict,
    fit_ridge_baseline,
    new_sample_mse,
    ridge_predict,
)


def fit_ridge(inputs, targets, alpha: float = 1.0):
    """One-shot fit: the accumulator fed a single batch."""
    return RidgeAccumulator().add(inputs, targets).solve(alpha)


def _data(n: int = 200, d_in: int = 6, d_out: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_in)) + rng.uniform(-2, 2, d_in)  # non-zero means
    w = rng.standard_normal((d_in, d_out))
    y = x @ w + rng.uniform(-1, 1, d_out) + 0.1 * rng.standard_normal((n, d_out))
    return x, y


# ----------------------------------------------------------------------------- ridge


def test_ridge_hand_made_1d() -> None:
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    w, b = fit_ridge(x, 2.0 * x + 1.0, alpha=0.0)
    assert w.shape == (1, 1) and b.shape == (1,)
    assert w[0, 0] == pytest.approx(2.0) and b[0] == pytest.approx(1.0)
    # α > 0 shrinks the slope to Sxy / (Sxx + α) = 10 / (5 + 5) = 1, intercept ȳ − x̄·W.
    w, b = fit_ridge(x, 2.0 * x + 1.0, alpha=5.0)
    assert w[0, 0] == pytest.approx(1.0) and b[0] == pytest.approx(4.0 - 1.5)


@pytest.mark.parametrize("alpha", [0.0, 1e-10])
def test_ridge_alpha_to_zero_is_least_squares_with_intercept(alpha: float) -> None:
    x, y = _data()
    w, b = fit_ridge(x, y, alpha=alpha)
    aug = np.hstack([x, np.ones((len(x), 1))])
    theta = np.linalg.lstsq(aug, y, rcond=None)[0]
    np.testing.assert_allclose(w, theta[:-1], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(b, theta[-1], rtol=1e-8, atol=1e-10)


def test_ridge_positive_alpha_matches_augmented_normal_equations() -> None:
    """Independent closed form: raw [X, 1] system with the intercept left unpenalised."""
    x, y = _data(seed=1)
    alpha = 7.5
    aug = np.hstack([x, np.ones((len(x), 1))])
    penalty = alpha * np.eye(aug.shape[1])
    penalty[-1, -1] = 0.0
    theta = np.linalg.solve(aug.T @ aug + penalty, aug.T @ y)
    w, b = fit_ridge(x, y, alpha=alpha)
    np.testing.assert_allclose(w, theta[:-1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b, theta[-1], rtol=1e-10, atol=1e-12)
    # Shrinkage is real: the penalised weights are smaller than the least-squares ones.
    assert np.linalg.norm(w) < np.linalg.norm(fit_ridge(x, y, alpha=0.0)[0])


def test_ridge_singular_inputs_with_zero_alpha() -> None:
    """A duplicated column makes XᵀX singular: α = 0 falls back to the min-norm solution."""
    x, y = _data(seed=2)
    x = np.hstack([x, x[:, :1]])
    w, b = fit_ridge(x, y, alpha=0.0)
    aug = np.hstack([x - x.mean(0), np.ones((len(x), 1))])
    pred_ref = aug @ np.linalg.lstsq(aug, y, rcond=None)[0]
    np.testing.assert_allclose(ridge_predict(x, w, b), pred_ref, atol=1e-8)
    np.testing.assert_allclose(w[0], w[-1], atol=1e-8)  # min-norm: the weight is split evenly
    np.testing.assert_allclose(w[0] + w[-1], fit_ridge(x[:, :-1], y, 0.0)[0][0], atol=1e-8)


def test_accumulator_equals_one_shot_fit() -> None:
    x, y = _data(n=301, seed=3)
    x = x + 1e6  # a large offset: raw sums would cancel catastrophically
    acc = RidgeAccumulator()
    for lo, hi in [(0, 1), (1, 1), (1, 50), (50, 51), (51, 301)]:  # incl. empty, single rows
        acc.add(torch.from_numpy(x[lo:hi]), y[lo:hi])  # tensors or arrays
    assert acc.count == 301
    for alpha in (0.0, 3.0):
        w1, b1 = fit_ridge(x, y, alpha=alpha)
        w2, b2 = acc.solve(alpha)
        np.testing.assert_allclose(w2, w1, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(b2, b1, rtol=1e-9, atol=1e-6)
    # And both still recover the planted map despite the offset.
    w_true = np.linalg.lstsq(np.hstack([x - 1e6, np.ones((301, 1))]), y, rcond=None)[0][:-1]
    np.testing.assert_allclose(acc.solve(0.0)[0], w_true, atol=1e-6)


def test_accumulator_flattens_frames_and_checks_shapes() -> None:
    rng = np.random.default_rng(4)
    frames = torch.from_numpy(rng.standard_normal((3, 5, 4)))  # [B, T, D]
    targets = torch.from_numpy(rng.standard_normal((3, 5, 2)))
    w1, b1 = RidgeAccumulator().add(frames, targets).solve(0.5)
    w2, b2 = fit_ridge(frames.reshape(15, 4).numpy(), targets.reshape(15, 2).numpy(), 0.5)
    np.testing.assert_allclose(w1, w2)
    np.testing.assert_allclose(b1, b2)
    acc = RidgeAccumulator()
    with pytest.raises(ValueError, match="add\\(\\) data first"):
        acc.solve()
    acc.add(frames, targets)
    with pytest.raises(ValueError, match="differ from earlier batches"):
        acc.add(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="same number of rows"):
        acc.add(np.zeros((2, 4)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="alpha"):
        acc.solve(-1.0)
    with pytest.raises(ValueError, match="NaN"):
        fit_ridge(np.full((2, 2), np.nan), np.zeros((2, 1)))


def test_ridge_predict_numpy_and_tensor() -> None:
    x, y = _data(seed=5)
    w, b = fit_ridge(x, y, alpha=1.0)
    ref = x @ w + b
    np.testing.assert_allclose(ridge_predict(x, w, b), ref)
    out = ridge_predict(torch.from_numpy(x).float(), w, b)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4)




# ------------------------------------------------------- the penalty chosen on validation


def _naive_choice(xt, yt, xv, yv):
    """Each penalty fitted by the augmented normal equations, scored by predicting val."""
    xc = xt - xt.mean(0)
    unit = np.trace(xc.T @ xc) / xt.shape[1]
    errors, fits = {}, {}
    for rel in RIDGE_RELATIVE_ALPHAS:
        a = rel * unit
        aug = np.hstack([xt, np.ones((len(xt), 1))])
        pen = a * np.eye(aug.shape[1])
        pen[-1, -1] = 0.0  # the intercept is not penalised
        wb = np.linalg.solve(aug.T @ aug + pen, aug.T @ yt)
        fits[a] = (wb[:-1], wb[-1])
        errors[a] = float(np.mean((xv @ wb[:-1] + wb[-1] - yv) ** 2))
    best = min(errors, key=errors.get)
    return best, fits[best], errors


@pytest.mark.parametrize("noise,n_train", [(0.0, 200), (3.0, 14)])
def test_choose_ridge_equals_fitting_and_scoring_every_penalty(noise: float,
                                                               n_train: int) -> None:
    """Known answers both ways: noiseless data with many rows wants the weakest penalty;
    14 noisy rows for 10 inputs want a strong one (a fixed alpha or the wrong end of the
    grid fails one case); the choice, its fit and every error equal the naive loop."""
    rng = np.random.default_rng(7)
    w_true = rng.standard_normal((10, 4))
    def make(n):
        x = rng.standard_normal((n, 10)) + 1.5
        return x, x @ w_true + 0.5 + noise * rng.standard_normal((n, 4))
    xt, yt = make(n_train)
    xv, yv = make(300)
    train = RidgeAccumulator().add(xt[: n_train // 2], yt[: n_train // 2]) \
        .add(xt[n_train // 2 :], yt[n_train // 2 :])
    val = RidgeAccumulator().add(xv[:100], yv[:100]).add(xv[100:], yv[100:])
    alpha, w, b, errors = choose_ridge(train, val)
    best, (w_ref, b_ref), errors_ref = _naive_choice(xt, yt, xv, yv)
    assert alpha == pytest.approx(best, rel=1e-12)
    np.testing.assert_allclose(w, w_ref, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(b, b_ref, rtol=1e-6, atol=1e-9)
    assert list(errors) == pytest.approx(list(errors_ref), rel=1e-12)
    assert list(errors.values()) == pytest.approx(list(errors_ref.values()), rel=1e-8)
    alphas = sorted(errors)
    if noise == 0.0:
        assert alpha == alphas[0]
    else:
        assert alphas.index(alpha) >= len(alphas) - 5  # within the strongest two decades


def test_fit_ridge_baseline_chooses_on_validation_or_says_it_did_not() -> None:
    x, y = _data(n=40, d_in=6, d_out=2, seed=3)
    pairs = [torch.from_numpy(np.stack([x, np.hstack([y, y, y])[:, :6]], axis=1)).float()]
    val = [pairs[0][:10] + 0.1]
    chosen = fit_ridge_baseline(pairs, None, val)
    assert chosen.chosen_by == "validation" and len(chosen.val_mse) == len(RIDGE_RELATIVE_ALPHAS)
    assert chosen.val_mse[chosen.alpha] == min(chosen.val_mse.values())
    fallback = fit_ridge_baseline(pairs, None, [])
    fixed = fit_ridge_baseline(pairs, 1.0)
    assert (fallback.alpha, fallback.chosen_by) == (1.0, "fixed (no validation pairs)")
    assert torch.equal(fallback.w, fixed.w) and fixed.chosen_by == "fixed"
    assert fit_ridge_baseline([], None, val) is None


# ---------------------------------------------------------------------- copy overlap


def _frames(signal: np.ndarray, x_len: int, hop: int, seq_len: int) -> tuple[np.ndarray, ...]:
    """Inputs/targets of one example as DESIGN.md defines them (target j = input j+1)."""
    frames = np.stack([signal[j * hop : j * hop + x_len] for j in range(seq_len + 1)])
    return frames[:-1], frames[1:]


def test_copy_overlap_exact_on_the_known_part() -> None:
    x_len, hop, seq_len = 8, 3, 4
    signal = np.sin(np.arange(seq_len * hop + x_len) * 0.7) + 0.1
    inputs, targets = (torch.from_numpy(a)[None] for a in _frames(signal, x_len, hop, seq_len))
    pred = copy_overlap_predict(inputs, hop)
    overlap = x_len - hop
    assert torch.equal(pred[..., :overlap], targets[..., :overlap])  # exactly zero error
    assert torch.all(pred[..., overlap:] == 0)
    new = targets[..., overlap:]
    expected_all = float((new**2).sum()) / targets.numel()
    assert copy_overlap_mse(inputs, targets, hop).item() == pytest.approx(expected_all)
    assert new_sample_mse(pred, targets, hop).item() == pytest.approx(float((new**2).mean()))
    # A perfect predictor scores 0 on the new samples; the copy baseline does not.
    assert new_sample_mse(targets, targets, hop).item() == 0.0
    assert new_sample_mse(pred, targets, hop).item() > 0.0


def test_copy_overlap_without_overlap_is_the_zero_predictor() -> None:
    rng = np.random.default_rng(6)
    inputs = torch.from_numpy(rng.standard_normal((2, 3, 5))).float()
    targets = torch.from_numpy(rng.standard_normal((2, 3, 5))).float()
    for hop in (5, 9):
        assert torch.all(copy_overlap_predict(inputs, hop) == 0)
        mse = copy_overlap_mse(inputs, targets, hop)
        assert mse.dtype == torch.float32
        assert mse.item() == pytest.approx(float((targets.double() ** 2).mean()), rel=1e-6)
        assert new_sample_mse(inputs, targets, hop).item() == pytest.approx(
            float(((inputs.double() - targets.double()) ** 2).mean()), rel=1e-6
        )
    with pytest.raises(ValueError, match="hop"):
        copy_overlap_mse(inputs, targets, 0)
    with pytest.raises(ValueError, match="same shape"):
        new_sample_mse(inputs, targets[..., :4], 2)
