"""Representations: exact inverses, dims, the literal DFT, standardisation, state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from audiolstm.data.representation import KINDS, Representation
from audiolstm.errors import UserError


def frames(n: int, x_len: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, x_len, generator=g) * 2 - 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("x_len", [1, 2, 7, 8, 64, 255])
def test_round_trip_and_dims(kind, x_len):
    rep = Representation(kind, x_len)
    x = frames(50, x_len)
    f = rep.encode(x)
    assert f.shape == (50, rep.dim) and f.dtype == torch.float32
    assert rep.dim == {"time": x_len, "fft": 2 * x_len, "rfft": x_len}[kind]
    assert (rep.decode(f) - x).abs().max() < 1e-4
    # Any leading dims (a (B, seq_len+1, x_len) batch), and usable as a transform.
    b = x.reshape(5, 10, x_len)
    assert torch.equal(rep(b), f.reshape(5, 10, rep.dim))


@pytest.mark.parametrize("x_len", [7, 8])
def test_fft_is_the_literal_dft(x_len):
    x = frames(4, x_len, seed=1).double()
    z = np.fft.fft(x.numpy(), axis=-1) / math.sqrt(x_len)  # ortho factor
    expected = np.concatenate([z.real, z.imag], axis=-1)
    np.testing.assert_allclose(Representation("fft", x_len).encode(x).numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("x_len", [7, 8])
def test_rfft_keeps_exactly_the_non_redundant_parts(x_len):
    x = frames(4, x_len, seed=2).double()
    z = np.fft.rfft(x.numpy(), axis=-1) / math.sqrt(x_len)
    imag = z.imag[:, 1 : (x_len - 1) // 2 + 1]
    expected = np.concatenate([z.real, imag], axis=-1)
    got = Representation("rfft", x_len).encode(x).numpy()
    assert got.shape[-1] == x_len
    np.testing.assert_allclose(got, expected, atol=1e-12)
    # Dropped parts really are zero for real input.
    assert np.abs(z.imag[:, 0]).max() < 1e-12
    if x_len % 2 == 0:
        assert np.abs(z.imag[:, -1]).max() < 1e-12


def test_ortho_keeps_sample_scale():
    # Parseval with norm="ortho": the full DFT has the frame's energy (GRUV's was x_len times it).
    x = frames(10, 64, seed=3)
    f = Representation("fft", 64).encode(x)
    torch.testing.assert_close((f**2).sum(-1), (x**2).sum(-1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("x_len", [7, 16])
def test_standardize(kind, x_len):
    train = frames(2000, x_len, seed=4) * 0.3 + 0.1
    rep = Representation(kind, x_len, standardize=True)
    with pytest.raises(RuntimeError):
        rep.encode(train)
    assert rep.fit(train, chunk=300) is rep
    f = rep.encode(train).double()
    raw_std = Representation(kind, x_len).encode(train.double()).std(0, unbiased=False)
    live = raw_std > 1e-6  # fft: imag of DC (and Nyquist) is identically zero
    if kind != "fft":
        assert bool(live.all())
    assert f.mean(0).abs().max() < 1e-4
    torch.testing.assert_close(
        f.std(0, unbiased=False)[live], torch.ones(int(live.sum())).double(), rtol=1e-4, atol=1e-4
    )
    if kind == "fft":
        assert int((~live).sum()) == 2 - x_len % 2
        assert f[:, ~live].abs().max() < 1e-3  # floored, no blow-up
    test = frames(30, x_len, seed=5)
    assert (rep.decode(rep.encode(test)) - test).abs().max() < 1e-4
    # Also from raw numpy frames (a split cut into non-overlapping frames), normalised in fit.
    raw = train.double().numpy() * 250.0 - 40.0
    rep2 = Representation(kind, x_len, standardize=True).fit(raw, shift=-40.0, scale=250.0)
    torch.testing.assert_close(rep2.mean, rep.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rep2.std, rep.std, rtol=1e-5, atol=1e-6)


def test_fit_is_noop_without_standardize():
    rep = Representation("rfft", 8).fit(frames(10, 8))
    assert not rep.fitted
    assert rep.encode(frames(2, 8)).shape == (2, 8)


@pytest.mark.parametrize("standardize", [False, True])
def test_state_dict_round_trip(standardize):
    rep = Representation("fft", 9, standardize=standardize).fit(frames(200, 9))
    d = json.loads(json.dumps(rep.state_dict()))
    rep2 = Representation.from_state_dict(d)
    x = frames(3, 9, seed=6)
    assert torch.equal(rep2.encode(x), rep.encode(x))
    rep3 = Representation("fft", 9, standardize=standardize)
    rep3.load_state_dict(rep.state_dict())
    assert torch.equal(rep3.decode(rep.encode(x)), rep.decode(rep.encode(x)))
    with pytest.raises(ValueError):
        Representation("rfft", 9).load_state_dict(d)


def test_errors():
    with pytest.raises(UserError, match=r"repr\.kind"):
        Representation("stft", 8)
    with pytest.raises(UserError, match=r"data\.x_len"):
        Representation("time", 0)
    with pytest.raises(ValueError):
        Representation("rfft", 8).encode(frames(2, 7))
