"""Mu-law and linear quantisation: exact round trips on the grid, monotone, endpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audiolstm.models.quantize import (
    dequantize,
    linear_decode,
    linear_encode,
    mu_law_decode,
    mu_law_encode,
    quantize,
)

CODECS = {"mu_law": (mu_law_encode, mu_law_decode), "linear": (linear_encode, linear_decode)}


@pytest.mark.parametrize("kind", ["mu_law", "linear"])
@pytest.mark.parametrize(
    ("q_levels", "dtype"),
    # float32 is the hard case (16-bit levels are 3e-5 apart); float64 only adds digits.
    [(2, torch.float64), (3, torch.float32), (256, torch.float32), (256, torch.float64),
     (65536, torch.float32)],
)
def test_round_trip_exact_on_the_grid(kind: str, q_levels: int, dtype: torch.dtype) -> None:
    encode, decode = CODECS[kind]
    q = torch.arange(q_levels)
    x = decode(q, q_levels, dtype=dtype)
    assert x.dtype == dtype
    assert torch.equal(encode(x, q_levels), q)
    assert torch.equal(decode(encode(x, q_levels), q_levels, dtype=dtype), x)
    # Decoded levels are strictly increasing.
    assert torch.all(x[1:] > x[:-1])


@pytest.mark.parametrize("kind", ["mu_law", "linear"])
def test_encode_is_monotone_and_covers_the_codes(kind: str) -> None:
    encode, _ = CODECS[kind]
    x = torch.linspace(-1.0, 1.0, 20_001, dtype=torch.float64)  # step 1e-4 < finest cell
    q = encode(x, 256)
    assert torch.all(q[1:] >= q[:-1])
    assert q.dtype == torch.int64 and int(q.min()) == 0 and int(q.max()) == 255
    assert torch.equal(torch.unique(q), torch.arange(256))


def test_endpoints() -> None:
    for q_levels in (256, 65536):
        ends = torch.tensor([-1.0, 1.0])
        assert mu_law_encode(ends, q_levels).tolist() == [0, q_levels - 1]
        assert linear_encode(ends, q_levels).tolist() == [0, q_levels - 1]
        top = torch.tensor([0, q_levels - 1])
        assert mu_law_decode(top, q_levels, dtype=torch.float64).tolist() == [-1.0, 1.0]
        half = 1.0 / q_levels  # linear decodes to cell centres, half a cell inside
        lin = linear_decode(top, q_levels, dtype=torch.float64).tolist()
        assert lin == pytest.approx([-1.0 + half, 1.0 - half], abs=1e-15)


def test_mu_law_matches_the_wavenet_formula() -> None:
    """Against a numpy transcription of the WaveNet / SampleRNN 8-bit mu-law."""
    mu = 255
    x = np.random.default_rng(0).uniform(-1, 1, 10_000)
    f = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    ref = np.floor((f + 1) / 2 * mu + 0.5).astype(np.int64)
    assert np.array_equal(mu_law_encode(torch.from_numpy(x)).numpy(), ref)
    assert mu_law_encode(torch.tensor([0.0])).item() == 128
    # Mu-law spends its levels near 0: the smallest step is far finer than linear's.
    levels = mu_law_decode(torch.arange(256), dtype=torch.float64)
    assert float(levels.diff().min()) < (2 / 256) / 40


@given(st.floats(-1.0, 1.0, allow_nan=False), st.sampled_from([16, 256, 65536]))
@settings(max_examples=60, deadline=None)
def test_decode_encode_error_is_at_most_half_a_step(x: float, q_levels: int) -> None:
    xt = torch.tensor([x], dtype=torch.float64)
    lin = linear_decode(linear_encode(xt, q_levels), q_levels, dtype=torch.float64).item()
    assert abs(lin - x) <= 1.0 / q_levels + 1e-12
    # Mu-law: half a step in the companded domain.
    mu = q_levels - 1

    def compand(v: float) -> float:
        return math.copysign(math.log1p(mu * abs(v)) / math.log1p(mu), v)

    back = mu_law_decode(mu_law_encode(xt, q_levels), q_levels, dtype=torch.float64).item()
    assert abs(compand(back) - compand(x)) <= 1.0 / mu + 1e-9


def test_out_of_range_clamps_and_bad_inputs_raise() -> None:
    assert mu_law_encode(torch.tensor([-3.0, 5.0])).tolist() == [0, 255]
    assert linear_encode(torch.tensor([-3.0, 5.0])).tolist() == [0, 255]
    with pytest.raises(ValueError, match="non-finite"):
        mu_law_encode(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="q_levels"):
        linear_encode(torch.zeros(3), 1)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 255\]"):
        mu_law_decode(torch.tensor([0, 256]))
    with pytest.raises(TypeError, match="integers"):
        linear_decode(torch.tensor([0.5]))


def test_quantize_dispatch() -> None:
    x = torch.linspace(-1, 1, 50)
    for kind, (encode, decode) in CODECS.items():
        q = quantize(x, 64, kind=kind)
        assert torch.equal(q, encode(x, 64))
        assert torch.equal(dequantize(q, 64, kind=kind), decode(q, 64))
    with pytest.raises(ValueError, match="kind"):
        quantize(x, 64, kind="alaw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        dequantize(torch.zeros(2, dtype=torch.long), 64, kind="alaw")  # type: ignore[arg-type]
