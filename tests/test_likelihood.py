"""The canonical likelihood: the grid, the conversions, and every model on known noise.

Reference values are computed here independently of the implementation: Gaussian bin
probabilities from `math.erfc` (accurate in both tails), mu-law cells from the mu-law
formula written out by hand, and the entropy of a quantised Gaussian from its definition.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from audiolstm.data.normalize import fit_normalizer
from audiolstm.data.representation import Representation
from audiolstm.data.state import DataState
from audiolstm.data.windows import identity_collate
from audiolstm.evaluation import likelihood as L
from audiolstm.models.frame_rnn import AudioRNN
from audiolstm.models.quantize import cell_edges
from audiolstm.models.samplernn import SampleRNN
from tests.conftest import FramesDataset, quiet_trainer

W = 2.0 / 256  # canonical bin width


def phi(z: float) -> float:
    """Standard normal CDF via erfc: accurate to full relative precision in the lower tail."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def interval(a: float, b: float) -> float:
    """Φ(b) − Φ(a) without cancellation in either tail (reflect into the lower half)."""
    if a + b > 0:
        a, b = -b, -a
    return phi(b) - phi(a)


def canonical_probs(mu: float, sigma: float) -> np.ndarray:
    """P(bin k) for N(mu, sigma²), the edge bins open: from the definition."""
    e = [-math.inf] + [-1.0 + 2.0 * k / 256 for k in range(1, 256)] + [math.inf]
    return np.array([interval((e[k] - mu) / sigma, (e[k + 1] - mu) / sigma)
                     for k in range(256)])


def quantised_entropy(sigma: float) -> float:
    p = canonical_probs(0.0, sigma)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


# ----------------------------------------------------------------------------- the grid


def test_bins_and_open_edges() -> None:
    x = torch.tensor([-5.0, -1.0, -1.0 + W - 1e-12, -1.0 + W, -1e-9, 0.0, 1.0 - W, 1.0, 7.0],
                     dtype=torch.float64)
    assert L.bin_index(x).tolist() == [0, 0, 0, 1, 127, 128, 255, 255, 255]
    e = L.edges()
    assert [e[k] for k in (0, 1, 128, 255)] == [-math.inf, -1.0 + W, 0.0, 1.0 - W]
    assert [e[k + 1] for k in (0, 1, 128, 255)] == [-1.0 + W, -1.0 + 2 * W, W, math.inf]
    assert e.shape == (257,) and e[0] == -math.inf and e[-1] == math.inf
    assert np.allclose(np.diff(e[1:-1]), W, rtol=0, atol=1e-15)
    assert L.GRID_NAME == "linear256[-1,1]" and L.LEVELS == 256
    with pytest.raises(ValueError, match="finite"):
        L.bin_index(torch.tensor([0.0, math.nan]))


@pytest.mark.parametrize("a,b", [(-0.3, 0.2), (-30.0, -29.0), (10.0, 11.0), (25.0, 25.5),
                                 (-math.inf, -3.0), (2.0, math.inf), (-math.inf, 30.0),
                                 (0.5, 0.5 + 1e-3)])
def test_normal_interval_against_erfc_in_both_tails(a: float, b: float) -> None:
    got = L.log_normal_interval(torch.tensor(a, dtype=torch.float64),
                                torch.tensor(b, dtype=torch.float64)).item()
    assert got == pytest.approx(math.log(interval(a, b)), rel=1e-12, abs=1e-12)


def test_normal_interval_far_narrower_than_sigma() -> None:
    a, width = 0.3, 1e-9
    got = L.log_normal_interval(torch.tensor(a, dtype=torch.float64),
                                torch.tensor(a + width, dtype=torch.float64)).item()
    width = (a + width) - a  # the width float64 actually holds
    density = math.exp(-0.5 * (a + width / 2) ** 2) / math.sqrt(2 * math.pi)
    assert got == pytest.approx(math.log(density * width), rel=1e-12)


@pytest.mark.parametrize("mu,sigma", [(0.0, 0.1), (0.3, 0.01), (-0.95, 0.05), (0.0, 3.0),
                                      (0.999, 1e-4), (0.2, 1e-5)])
def test_gaussian_bits_closed_form(mu: float, sigma: float) -> None:
    ref = canonical_probs(mu, sigma)
    centres = torch.tensor([-1.0 + (2 * k + 1) / 256 for k in range(256)], dtype=torch.float64)
    centres[0], centres[-1] = -1.7, 1.3  # beyond ±1: still the (open) edge bins
    got = L.gaussian_log_prob(centres, torch.full_like(centres, mu), sigma).exp().numpy()
    mask = ref > 1e-300
    np.testing.assert_allclose(got[mask], ref[mask], rtol=1e-10, atol=0)
    assert got.sum() == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------------ other grids


def _mu_law_cell(q: int, mu: int = 255) -> tuple[float, float]:
    """Original-scale interval of mu-law code q, from the mu-law formula by hand."""

    def expand(f: float) -> float:
        return math.copysign(((1 + mu) ** abs(f) - 1) / mu, f)

    lo = -math.inf if q == 0 else expand(-1 + (2 * q - 1) / mu)
    hi = math.inf if q == mu else expand(-1 + (2 * q + 1) / mu)
    return lo, hi


def test_mu_law_to_canonical_is_exact_on_a_hand_made_distribution() -> None:
    # mass on five codes: the open bottom cell, a narrow one near 0, two wide ones, the top
    mass = {0: 0.1, 128: 0.35, 200: 0.2, 250: 0.25, 255: 0.1}
    w = L.spread_matrix(cell_edges(256, "mu_law"))
    p_own = np.zeros(256)
    for q, m in mass.items():
        p_own[q] = m
    got = p_own @ w
    expected = np.zeros(256)
    for q, m in mass.items():
        lo, hi = _mu_law_cell(q)
        lo, hi = max(lo, -1.0), min(hi, 1.0)  # an open cell covers the clipped range
        for k in range(256):
            a, b = -1.0 + k * W, -1.0 + (k + 1) * W
            expected[k] += m * max(0.0, min(b, hi) - max(a, lo)) / (hi - lo)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-16)  # float64 edges
    assert got.sum() == pytest.approx(1.0, abs=1e-15)
    # by hand: code 128 is [0, 1.7e-4), inside bin 128; code 255 is [0.97852.., +inf),
    # spread over [0.97852.., 1]: part of bin 253 [0.9765625, 0.984375), bins 254 and 255
    top = (256 ** (254 / 255) - 1) / 255
    span = 1.0 - top
    assert got[128] == pytest.approx(0.35, abs=1e-15) and w[128, 128] == 1.0
    assert w[255, 253] == pytest.approx((0.984375 - top) / span, rel=1e-12)
    assert w[255, 254] == pytest.approx(W / span, rel=1e-12)
    assert w[255, 255] == pytest.approx(W / span, rel=1e-12)
    assert w[0, 0] == pytest.approx(W / span, rel=1e-12)  # the open bottom cell, mirrored


def test_linear_256_cells_are_the_canonical_grid() -> None:
    assert np.array_equal(L.spread_matrix(cell_edges(256, "linear")), np.eye(256))
    assert np.allclose(cell_edges(256, "linear")[1:-1], L.edges()[1:-1], rtol=0, atol=0)


def test_open_cell_beyond_the_clip_goes_to_the_edge_bin() -> None:
    w = L.spread_matrix(np.array([-math.inf, -1.5, 0.0, 1.2, math.inf]))
    assert w[0, 0] == 1.0 and w[3, 255] == 1.0  # (-inf, -1.5) and [1.2, inf) lie beyond ±1
    # [-1.5, 0) is an ordinary cell: spread over its own width, its part below -1 + W
    # into the open bin 0
    assert w[1, 0] == pytest.approx((0.5 + W) / 1.5) and w[1, 1] == pytest.approx(W / 1.5)
    assert np.allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-15)


def test_discrete_log_prob_is_the_spread_sum() -> None:
    g = torch.Generator().manual_seed(0)
    w = L.spread_matrix(cell_edges(64, "mu_law"))
    logits = torch.randn(5, 7, 64, generator=g, dtype=torch.float64)
    log_p = torch.log_softmax(logits, -1)
    x = torch.rand(5, 7, generator=g, dtype=torch.float64) * 2.4 - 1.2
    got = L.discrete_log_prob(log_p, x, torch.from_numpy(w).log())
    full = log_p.exp() @ torch.from_numpy(w)
    ref = full.gather(-1, L.bin_index(x).unsqueeze(-1)).squeeze(-1).log()
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("cells", [2, 3, 100, 255, 256, 257, 1000, 1024, 65536])
def test_linear_pieces_equal_spreading_every_cell(cells: int) -> None:
    start, stop, frac = L.linear_pieces(cells)
    p = np.random.default_rng(cells).dirichlet(np.ones(cells))
    cum = np.concatenate([[0.0], np.cumsum(p)])
    via_pieces = (frac * (cum[stop] - cum[start])).sum(axis=1)
    if cells <= 1024:
        edges = np.concatenate([[-np.inf], -1 + 2 * np.arange(1, cells) / cells, [np.inf]])
        np.testing.assert_allclose(via_pieces, p @ L.spread_matrix(edges), rtol=1e-9, atol=1e-15)
    assert via_pieces.sum() == pytest.approx(1.0, abs=1e-12)
    assert (frac >= 0).all() and (frac <= 1).all()


# ------------------------------------------------- every model on i.i.d. Gaussian noise

SIGMA = 0.1
D = 16


def _noise(n: int, seed: int, offset: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return offset + SIGMA * torch.randn(n, 5, D, generator=g, dtype=torch.float64)


def _state(train: torch.Tensor, scheme: str) -> tuple[DataState, object]:
    norm = fit_normalizer(scheme, train.reshape(-1).numpy())
    return DataState(data={"x_len": D, "sample_rate": 8000},
                     repr={"kind": "time", "standardize": False},
                     normalizer_state=norm.state_dict()), norm


def _loader(frames: torch.Tensor, norm) -> DataLoader:
    return DataLoader(FramesDataset(norm.transform(frames).float()), batch_size=64,
                      collate_fn=identity_collate)


def _bound(n_samples: int) -> float:
    """4 standard errors of a cross-entropy estimate (std of −log2 p ≈ 1.03 bits here)."""
    return 4 * 1.05 / math.sqrt(n_samples)


def _set_head_bias(model: AudioRNN, bias: torch.Tensor) -> None:
    proj = getattr(model.head, "proj", model.head)
    with torch.no_grad():
        proj.weight.zero_()
        proj.bias.copy_(bias.reshape(-1))


@pytest.mark.parametrize("scheme", ["std", "minmax01"])
def test_every_model_approaches_the_quantised_entropy_from_above(scheme: str) -> None:
    """The perfect predictor of each kind scores the entropy H (within sampling error);
    no model scores below it; the ones that lose information score above it."""
    h = quantised_entropy(SIGMA)
    assert h == pytest.approx(5.7255, abs=1e-3)  # the 5.73 bits for N(0, 0.1²)
    offset = 0.05  # a non-zero mean: the zero baseline must predict it, not 0
    train, val, test = _noise(300, 0, offset), _noise(300, 1, offset), _noise(300, 2, offset)
    state, norm = _state(train, scheme)
    shift, scale = norm.affine()
    n = test[:, 1:].numel()
    tol = _bound(n)
    mu, log_s = (offset - shift) / scale, math.log(SIGMA / scale)
    results: dict[str, float] = {}

    def score(model, name: str) -> dict[str, float]:
        model.data_state = state
        trainer = quiet_trainer()
        trainer.validate(model, _loader(val, norm), verbose=False)  # the test variances
        res = trainer.test(model, _loader(test, norm), verbose=False)[0]
        results[name] = res["test/bits_per_sample"]
        return res

    gauss = AudioRNN(input_dim=D, hidden_sizes=[3], head="gaussian")
    _set_head_bias(gauss, torch.cat([torch.full((D,), mu), torch.full((D,), log_s)]))
    score(gauss, "gaussian")
    for bins in (256, 1000):
        mix = AudioRNN(input_dim=D, hidden_sizes=[3], head="logistic_mixture",
                       mixture_components=1, mixture_bins=bins)
        s = SIGMA * math.sqrt(3) / math.pi / scale  # the logistic with the noise's variance
        _set_head_bias(mix, torch.tensor([0.0, mu, math.log(s)]).repeat(D))
        res = score(mix, f"logistic_{bins}")
        if bins == 256:  # its own grid is the canonical one: the same number
            assert res["test/bits_per_sample_linear256"] == pytest.approx(
                res["test/bits_per_sample"], rel=1e-9)
    mse = AudioRNN(input_dim=D, hidden_sizes=[3], head="mse")
    _set_head_bias(mse, torch.full((D,), mu))  # predicts the mean: the best MSE predictor
    res = score(mse, "mse")
    results["zero"] = res["test/bits_per_sample_zero"]
    results["persistence"] = res["test/bits_per_sample_persistence"]
    assert res["test/mse_zero"] == pytest.approx(SIGMA**2 / scale**2, rel=0.05)  # the mean
    for kind in ("mu_law", "linear"):
        torch.manual_seed(0)
        srnn = SampleRNN(frame_sizes=[4], hidden=4, mlp_hidden=4, embed_dim=2,
                         quantization=kind)
        edges = cell_edges(256, kind)
        p = np.array([interval((a - offset) / SIGMA, (b - offset) / SIGMA)
                      for a, b in zip(edges[:-1], edges[1:], strict=True)])
        with torch.no_grad():  # the exact distribution of its own codes, whatever the input
            srnn.mlp[-1].weight.zero_()
            srnn.mlp[-1].bias.copy_(torch.from_numpy(np.log(np.maximum(p, 1e-300))))
        res = score(srnn, f"samplernn_{kind}")
        own = res[f"test/{srnn.own_grid_metric}"]
        if kind == "linear":
            assert own == pytest.approx(res["test/bits_per_sample"], rel=1e-6)
        else:
            assert own > h + 1.0  # mu-law's own bits are of another grid (7.29 here)

    for name, bits in results.items():
        assert bits > h - tol, f"{name}: {bits:.4f} bits < entropy {h:.4f} - {tol:.4f}"
    for name in ("gaussian", "mse", "zero", "samplernn_linear"):
        assert results[name] == pytest.approx(h, abs=tol), name
    # what loses information scores above: a logistic is not a Gaussian, mu-law cells wider
    # than a bin are spread, persistence doubles the error variance (+ ½ log2 2 bits)
    assert results["persistence"] == pytest.approx(h + 0.5, abs=0.05)
    for name in ("logistic_256", "logistic_1000", "samplernn_mu_law"):
        assert h - tol < results[name] < h + 0.1, name
    assert results["logistic_1000"] == pytest.approx(results["logistic_256"], abs=0.01)


class CopyOverlap(AudioRNN):
    """The ideal mse predictor of overlapping frames of i.i.d. noise: the overlap copied
    from the input frame (known exactly), the `hop` new samples at the mean `mu`."""

    def __init__(self, x_len: int, hop: int, mu: float) -> None:
        super().__init__(input_dim=x_len, hidden_sizes=[2])
        self.hop, self.mu = hop, mu

    def forward(self, x: torch.Tensor, state=None):
        new = torch.full((*x.shape[:-1], self.hop), self.mu, dtype=x.dtype)
        return torch.cat([x[..., self.hop :], new], dim=-1), state


#: (hop, repr kind, norm scheme) of x_len = 16 frames: what `test_every_model_...` above
#: does not cover; each is scored by the mean predictor (and the ideal copy predictor with
#: overlap) and the baselines, against the entropy of the quantised Gaussian
SCORED = {
    "overlap hop 4": (4, "time", "std"),
    "fft": (16, "fft", "std"),
    "rfft": (16, "rfft", "std"),
    "minmax_union": (16, "time", "minmax_union"),
    "none": (16, "time", "none"),
}


@pytest.mark.parametrize("case", list(SCORED))
def test_mse_scoring_with_overlap_features_and_every_norm_is_the_entropy(case: str) -> None:
    """i.i.d. N(0.05, 0.1²) noise: the best mse predictor scores H = 5.73 bits (within 4
    standard errors), persistence H + ½ (its error variance doubles), whatever the hop,
    representation or normaliser; the reference H comes from `quantised_entropy`.

    Mutants caught (each tried): scoring every sample of an overlapping frame instead of
    its last `hop` (the copied overlap would be "predicted" exactly: far fewer bits) or
    its first `hop`; scoring DFT features without decoding them to samples (fft, rfft);
    mapping val/test back with the train affine under minmax_union (its test scale is
    about twice the train one here: about one bit too few).
    """
    hop, kind, scheme = SCORED[case]
    x_len, frames = 16, 6
    h = quantised_entropy(SIGMA)
    offset = 0.05

    def signal(seed: int, n: int) -> np.ndarray:
        g = np.random.default_rng(seed)
        return offset + SIGMA * g.standard_normal(n)

    train, val, test = signal(10, 40_000), signal(11, 40_000), signal(12, 40_000)
    if scheme == "minmax_union":  # a narrow train range: val/test keep their own, wider scale
        train = np.clip(train, offset - 0.15, offset + 0.15)
    norm = fit_normalizer(scheme, train, {"val": val, "test": test})
    if scheme == "minmax_union":
        assert norm.affine("test")[1] > 1.8 * norm.affine("train")[1]
    rep = Representation(kind, x_len)
    state = DataState(data={"x_len": x_len, "hop": hop, "sample_rate": 8000},
                      repr={"kind": kind, "standardize": False},
                      normalizer_state=norm.state_dict(), representation_state=rep.state_dict())

    def loader(x: np.ndarray, split: str) -> DataLoader:
        """Examples of `frames` consecutive frames, `hop` apart, normalised and encoded."""
        span = (frames - 1) * hop + x_len
        starts = range(0, len(x) - span + 1, span)
        ex = np.stack([[x[a + j * hop : a + j * hop + x_len] for j in range(frames)]
                       for a in starts])
        feats = rep.encode(torch.as_tensor(norm.transform(ex, split), dtype=torch.float32))
        return DataLoader(FramesDataset(feats), batch_size=64, collate_fn=identity_collate)

    if hop < x_len:
        model = CopyOverlap(x_len, hop, norm.train_mean("test"))
    else:
        model = AudioRNN(input_dim=rep.dim, hidden_sizes=[3], head="mse")
        mean_frame = rep.encode(torch.full((x_len,), norm.train_mean("test")))
        _set_head_bias(model, mean_frame)  # the mean, in this split's units and features
    model.data_state = state
    trainer = quiet_trainer()
    trainer.validate(model, loader(val, "val"), verbose=False)  # the test variances
    res = trainer.test(model, loader(test, "test"), verbose=False)[0]
    n = len(range(0, 40_000 - (frames - 1) * hop - x_len + 1,
                  (frames - 1) * hop + x_len)) * (frames - 1) * hop
    tol = _bound(n)
    assert res["test/bits_per_sample"] == pytest.approx(h, abs=tol)
    assert res["test/bits_per_sample_zero"] == pytest.approx(h, abs=tol)
    assert res["test/bits_per_sample_persistence"] == pytest.approx(h + 0.5, abs=3 * tol)


def test_a_trained_gaussian_head_approaches_the_entropy_from_above() -> None:
    h = quantised_entropy(SIGMA)
    train, val, test = _noise(512, 3), _noise(64, 4), _noise(256, 5)
    state, norm = _state(train, "std")
    torch.manual_seed(0)
    model = AudioRNN(input_dim=D, hidden_sizes=[8], head="gaussian",
                     optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01})
    model.data_state = state
    seen = []
    for _ in range(4):
        trainer = quiet_trainer(max_epochs=2)
        trainer.fit(model, _loader(train, norm), _loader(val, norm))
        seen.append(trainer.test(model, _loader(test, norm), verbose=False)[0][
            "test/bits_per_sample"])
    tol = _bound(test[:, 1:].numel())
    assert min(seen) < seen[0]  # it learns ...
    assert min(seen) < h + 0.05  # ... close to the entropy ...
    assert all(b > h - tol for b in seen)  # ... and never below it


def test_mse_models_are_gaussian_equivalent_with_variance_from_other_data() -> None:
    """val: the variance is the training MSE; test: the validation MSE, checkpointed."""
    train, val, test = _noise(32, 6), _noise(32, 7), _noise(32, 8)
    state, norm = _state(train, "std")
    model = AudioRNN(input_dim=D, hidden_sizes=[4], head="mse",
                     optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.0})
    model.data_state = state
    trainer = quiet_trainer(max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(model, _loader(train, norm), _loader(val, norm))
    with torch.no_grad():
        def mse_on(frames: torch.Tensor) -> float:
            y = norm.transform(frames).float()
            pred = model(y[:, :-1])[0]
            return float(((pred - y[:, 1:]).double() * norm.scale).square().mean())

        train_mse, val_mse = mse_on(train), mse_on(val)
    ref = model.reference_variance
    assert ref["val"]["model"] == pytest.approx(train_mse, rel=1e-5)  # lr 0: train = eval
    assert ref["test"]["model"] == pytest.approx(val_mse, rel=1e-5)
    assert set(ref["val"]) == {"model"}  # the baselines are scored on test only
    assert ref["test"]["zero"] == pytest.approx(
        float(((val[:, 1:] - norm.mean) ** 2).mean()), rel=1e-6)
    res = trainer.test(model, _loader(test, norm), verbose=False)[0]
    with torch.no_grad():
        y = norm.transform(test).float()
        pred = model(y[:, :-1])[0].double() * norm.scale + norm.shift
    x = y[:, 1:].double() * norm.scale + norm.shift
    sigma = math.sqrt(val_mse)  # naive: each sample's bin mass under N(pred, val MSE), erfc
    edges = [-math.inf] + [-1.0 + 2.0 * k / 256 for k in range(1, 256)] + [math.inf]
    logs = [math.log2(interval((edges[k] - m) / sigma, (edges[k + 1] - m) / sigma))
            for v, m in zip(x.reshape(-1).tolist(), pred.reshape(-1).tolist(), strict=True)
            for k in [min(255, max(0, math.floor((v + 1.0) * 128)))]]
    expected = -sum(logs) / len(logs)
    assert res["test/bits_per_sample"] == pytest.approx(expected, rel=1e-6)


def test_summary_and_report_name_the_grid() -> None:
    from audiolstm.runinfo import SUMMARY_FIELDS

    fields = {f.key: f for f in SUMMARY_FIELDS}
    assert L.GRID_NAME in fields["test_bits_per_sample"].header
    assert fields["test_bits_per_sample"].metric == "test/bits_per_sample"
    assert "bits_grid" in fields
