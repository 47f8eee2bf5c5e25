"""The one draw rule (models/draw.py): inverse CDF and nucleus against naive references.

Masses here are small integers (exact in float32, and so are their sums), so the naive
loops and the tensor code must agree exactly, edges included.
"""

from __future__ import annotations

import pytest
import torch

from audiolstm.models.draw import check_top_p, inverse_cdf, nucleus


def naive_inverse_cdf(masses: list[float], u: float) -> int:
    """The first level whose running mass reaches u × total (a plain loop)."""
    total, run = sum(masses), 0.0
    for k, m in enumerate(masses):
        run += m
        if run >= u * total:
            return k
    raise AssertionError("u in (0, 1] always lands on a level")


def naive_nucleus(masses: list[float], top_p: float) -> set[int]:
    """Most likely first: keep levels while the mass kept so far is below top_p × total
    (so the level that crosses top_p is kept), then every level tied with the last one."""
    order = sorted(range(len(masses)), key=lambda k: -masses[k])
    total, run, kept = sum(masses), 0.0, []
    for k in order:
        if run >= top_p * total:
            break
        kept.append(k)
        run += masses[k]
    return set(kept) | {k for k, m in enumerate(masses) if m == masses[kept[-1]]}


def test_inverse_cdf_equals_the_naive_loop_at_every_edge() -> None:
    """Every u on the grid of 1/total, and just beside it, against the plain loop: the
    level's first unit of mass starts it, u = 1 is the last level of mass > 0, and levels
    of mass 0 (first, inner, last) are never drawn. Mutant caught: `right=True` in the
    searchsorted (a level drawn one past its edge, a zero-mass level after it drawn)."""
    masses = [0.0, 3.0, 0.0, 0.0, 5.0, 1.0, 0.0, 7.0, 0.0]
    total = sum(masses)
    us = [k / total for k in range(1, int(total) + 1)]
    us += [u - 1e-3 for u in us] + [u + 1e-3 for u in us if u < 1.0]
    probs = torch.tensor([masses] * len(us))
    drawn = inverse_cdf(probs, torch.tensor(us)[:, None])[:, 0].tolist()
    assert drawn == [naive_inverse_cdf(masses, u) for u in us]
    assert set(drawn) == {1, 4, 5, 7}
    assert drawn[us.index(1.0)] == 7  # u = 1: the last level of mass > 0


@pytest.mark.parametrize("top_p", [0.05, 0.25, 0.5, 0.75, 0.9, 0.999])
def test_nucleus_keeps_exactly_the_naive_set(top_p: float) -> None:
    """Random distinct integer masses, 20 rows of 40 levels: the kept set equals the naive
    loop's, and the kept masses are unchanged (truncation only; the draw renormalises).
    Mutants caught: excluding the level that crosses top_p (`probs > threshold`), and
    keeping one level too many (the crossing index + 1)."""
    g = torch.Generator().manual_seed(0)
    rows = torch.stack([torch.randperm(40, generator=g).float() + 1 for _ in range(20)])
    out = nucleus(rows, top_p)
    for row, kept in zip(rows.tolist(), out.tolist(), strict=True):
        expected = naive_nucleus(row, top_p)
        assert {k for k, m in enumerate(kept) if m > 0} == expected
        assert all(kept[k] == row[k] for k in expected)


def test_nucleus_keeps_ties_and_the_crossing_level() -> None:
    """[3, 2, 2, 1] at top_p = 0.5 (target 4): 3, then the 2 that crosses 4, then the other
    2 (tied with it): {0, 1, 2}. top_p = 0.3 (target 2.4): 3 alone crosses it."""
    row = torch.tensor([[3.0, 2.0, 2.0, 1.0]])
    assert nucleus(row, 0.5).tolist() == [[3.0, 2.0, 2.0, 0.0]]
    assert nucleus(row, 0.3).tolist() == [[3.0, 0.0, 0.0, 0.0]]
    assert nucleus(row, 1.0).tolist() == row.tolist()


def test_top_p_one_is_plain_sampling_draw_for_draw() -> None:
    """top_p = 1 keeps every level, even those whose mass vanishes beside the total's
    rounding, so it draws the same codes as the plain inverse CDF from the same uniforms.
    Mutant caught (tried): running the sorted truncation at top_p = 1 too, which drops
    ~10,000 of these levels (their cumulative sum has already reached the total)."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 256, generator=g) * 8  # masses down to ~1e-40
    u = 1.0 - torch.rand(64, 1, generator=g)
    probs = torch.softmax(logits, dim=1)
    assert torch.equal(nucleus(probs, 1.0), probs)
    assert torch.equal(inverse_cdf(nucleus(probs, 1.0), u), inverse_cdf(probs.clone(), u))


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_top_p_outside_zero_one_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="top_p must be in"):
        check_top_p(bad)
    assert check_top_p(1) == 1.0 and check_top_p(0.3) == 0.3
