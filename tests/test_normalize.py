"""Normalisers: fitted on train only, exact values, exact inverses, the minmax_union rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audiolstm.data.normalize import SCHEMES, Normalizer, fit_normalizer
from audiolstm.errors import UserError


def signal(n: int, seed: int, amp: float = 1.0, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * amp + offset).astype(np.float32)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_train_only(scheme):
    train = signal(5000, 0, 300.0, 20.0)
    a = fit_normalizer(scheme, train, {"val": signal(600, 1), "test": signal(600, 2)})
    b = fit_normalizer(scheme, train, {"val": signal(600, 3, 1e4), "test": signal(600, 4, 1e4)})
    c = fit_normalizer(scheme, train)
    assert (a.shift, a.scale) == (b.shift, b.scale) == (c.shift, c.scale)
    assert a.affine("train") == b.affine("train")
    if scheme == "minmax_union":
        assert b.split_scales["val"] > a.split_scales["val"]  # only val/test scales move
    else:
        assert a.affine("val") == b.affine("val") == a.affine("train")


def test_exact_values_small_arrays():
    train = np.array([-1.0, 0.0, 3.0])
    n = fit_normalizer("minmax", train)
    assert n.shift == pytest.approx(2 / 3, abs=1e-15)
    assert n.scale == pytest.approx(7 / 3, abs=1e-15)  # max(3 - 2/3, 2/3 + 1)
    n = fit_normalizer("minmax01", train)
    assert (n.shift, n.scale) == (-1.0, 4.0)
    n = fit_normalizer("std", np.array([1.0, 3.0]))
    assert (n.shift, n.scale) == (2.0, 1.0)
    n = fit_normalizer("none", train)
    assert (n.shift, n.scale) == (0.0, 1.0)


def test_minmax_range_exactly_unit():
    train = signal(10_001, 5, 5000.0, 123.0).astype(np.float64)
    n = fit_normalizer("minmax", train)
    y = n.transform(train)
    assert y.min() >= -1.0 and y.max() <= 1.0
    assert max(-y.min(), y.max()) == 1.0
    assert abs(y.mean()) < 1e-12

    y = fit_normalizer("minmax01", train).transform(train)
    assert y.min() == 0.0 and y.max() == 1.0

    y = fit_normalizer("std", train).transform(train)
    assert y.std() == pytest.approx(1.0, abs=1e-12) and abs(y.mean()) < 1e-12


def test_minmax_union_rule():
    train = np.array([-2.0, 0.0, 2.0])  # mean 0, scale 2
    wide = np.array([-5.0, 1.0])  # own max |x - 0| = 5 > 2
    narrow = np.array([0.5, -1.0])  # 1 < 2
    n = fit_normalizer("minmax_union", train, {"val": wide, "test": narrow})
    assert n.affine("train") == (0.0, 2.0)
    assert n.affine("val") == (0.0, 5.0)
    assert n.affine("test") == (0.0, 2.0)
    assert n.transform(wide, "val").min() == -1.0
    # Deviation is measured from the TRAIN mean, not the split's own.
    n = fit_normalizer("minmax_union", np.array([9.0, 10.0, 11.0]), {"val": np.array([14.0])})
    assert n.affine("val") == (10.0, 4.0)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_inverse_round_trip(scheme):
    train = signal(3000, 6, 4000.0, -50.0)
    val = signal(300, 7, 8000.0)
    n = fit_normalizer(scheme, train, {"val": val})
    for split, x in (("train", train), ("val", val)):
        y = n.transform(x, split)
        assert y.dtype == np.float32
        np.testing.assert_allclose(n.inverse(y, split), x, rtol=1e-6, atol=1e-6 * n.scale)
        t = torch.from_numpy(x)
        yt = n.transform(t, split)
        assert yt.dtype == torch.float32
        np.testing.assert_array_equal(yt.numpy(), y)
        torch.testing.assert_close(n.inverse(yt, split), t, rtol=1e-6, atol=1e-6 * n.scale)


def test_state_dict_json_round_trip():
    n = fit_normalizer("minmax_union", signal(1000, 8), {"val": signal(100, 9, 9.0)})
    d = json.loads(json.dumps(n.state_dict()))
    m = Normalizer.from_state_dict(d)
    assert m == n
    assert isinstance(m.shift, float) and isinstance(m.split_scales["val"], float)


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "none"])
def test_silent_train_is_a_user_error(scheme):
    with pytest.raises(UserError, match=f"silent.*{scheme}|{scheme}.*silent"):
        fit_normalizer(scheme, np.full(1000, 0.25, np.float32))


def test_unknown_scheme_and_empty_train():
    with pytest.raises(UserError, match=r"norm\.scheme.*minmax_union"):
        fit_normalizer("zscore", signal(10, 0))
    with pytest.raises(UserError, match="empty"):
        fit_normalizer("minmax", np.zeros(0, np.float32))
    with pytest.raises(UserError, match="NaN"):
        fit_normalizer("std", np.array([1.0, np.nan]))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_chunked_fit_equals_one_shot(scheme, tmp_path):
    x = signal(25_013, 10, 700.0, 3.0)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    val = signal(2000, 11, 3000.0)
    n = fit_normalizer(scheme, mm, {"val": val}, chunk=1000)
    x64 = x.astype(np.float64)
    mean = x64.mean()
    expected = {
        "minmax": (mean, np.abs(x64 - mean).max()),
        "minmax_union": (mean, np.abs(x64 - mean).max()),
        "minmax01": (x64.min(), x64.max() - x64.min()),
        "std": (mean, x64.std()),
        "none": (0.0, 1.0),
    }[scheme]
    np.testing.assert_allclose((n.shift, n.scale), expected, rtol=1e-12)
    if scheme == "minmax_union":
        own = np.abs(val.astype(np.float64) - mean).max()
        assert n.affine("val")[1] == pytest.approx(max(expected[1], own), rel=1e-12)
