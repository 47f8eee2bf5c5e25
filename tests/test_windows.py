"""Windows against a naive slicing loop: counts, frames, views, batches, buffer ring."""

from __future__ import annotations

import pickle
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from audiolstm.data.windows import (
    ShuffleSampler,
    WindowDataset,
    WindowSpec,
    example_frames,
    identity_collate,
)
from audiolstm.errors import UserError


def naive_examples(s: np.ndarray, x_len, seq_len, window_shift, hop=None, offsets=(0,)):
    """The seeds' loop: every example as a list of seq_len + 1 sliced frames."""
    step = hop or x_len
    out = []
    for o in offsets:
        a = o
        while a + seq_len * step + x_len <= len(s):
            out.append(
                np.stack([s[a + j * step : a + j * step + x_len] for j in range(seq_len + 1)])
            )
            a += window_shift
    return out


@st.composite
def specs(draw):
    x_len = draw(st.integers(1, 12))
    seq_len = draw(st.integers(1, 5))
    hop = draw(st.one_of(st.none(), st.integers(1, 2 * x_len)))  # overlapping and gapped frames
    window_shift = draw(st.integers(1, 20))
    offsets = draw(
        st.lists(st.integers(0, 30), min_size=1, max_size=3, unique_by=lambda o: o % window_shift)
    )
    n = draw(st.integers(0, 200))
    return WindowSpec(x_len, seq_len, window_shift, hop, tuple(offsets)), n


@settings(max_examples=300, deadline=None)
@given(specs())
def test_matches_naive_loop(case):
    spec, n = case
    s = np.arange(n, dtype=np.float32) * 0.5 - 7.0
    ref = naive_examples(s, spec.x_len, spec.seq_len, spec.window_shift, spec.hop, spec.offsets)
    assert spec.count(n) == len(ref)
    views = example_frames(s, spec)
    assert [v.shape[0] for v in views] == [spec.count_at(n, o) for o in spec.offsets]
    got = [e for v in views for e in v]
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_array_equal(g, r)
    if ref:
        assert n >= spec.min_samples
    if n < spec.min_samples:
        assert spec.count(n) == 0

    ds = WindowDataset(s, spec)
    assert len(ds) == len(ref)
    for i in range(len(ds)):
        item = ds[i]
        np.testing.assert_array_equal(item.numpy(), ref[i])
        # Inputs and targets: target frame j is input frame j + 1.
        x, y = item[:-1], item[1:]
        assert torch.equal(y[:-1], x[1:])
        assert x.data_ptr() == item.data_ptr()


def test_count_by_hand():
    spec = WindowSpec(x_len=2, seq_len=3, window_shift=1)  # span 8
    assert spec.span == 8 and spec.step == 2 and spec.min_samples == 8
    assert spec.count(7) == 0
    assert spec.count(8) == 1
    assert spec.count(10) == 3
    assert spec.count(0) == 0
    assert WindowSpec(2, 3, 4, hop=1).span == 5  # seq_len*hop + x_len
    assert WindowSpec(2, 3, 4, hop=1).count(13) == 3  # starts 0, 4, 8
    # Offsets: starts 0,3,6 (n=10, span 4) and 1,4: concatenated.
    spec = WindowSpec(2, 1, 3, offsets=(0, 1))
    assert spec.count_at(10, 0) == 3 and spec.count_at(10, 1) == 2 and spec.count(10) == 5
    assert WindowSpec(2, 1, 3, offsets=(5, 1)).min_samples == 5
    # DESIGN / seed 000: 140 M train samples, x_len 8000, seq_len 25, shift 1000.
    big = WindowSpec(x_len=8000, seq_len=25, window_shift=1000)
    assert big.span == 208_000
    assert big.count(140_000_000) == 139_793  # "about 140 000 training examples"


def test_seed_001_offset_example():
    # [a..h], windows of 2 without overlap: offset 0 -> ab cd ef gh, offset 1 -> bc de fg.
    s = np.arange(8, dtype=np.float32)
    spec = WindowSpec(x_len=1, seq_len=1, window_shift=2, offsets=(0, 1))
    got = [e.ravel().tolist() for v in example_frames(s, spec) for e in v]
    assert got == [[0, 1], [2, 3], [4, 5], [6, 7], [1, 2], [3, 4], [5, 6]]


def test_views_share_memory_and_are_read_only(tmp_path):
    path = tmp_path / "sig.npy"
    np.save(path, np.random.default_rng(0).standard_normal(5000).astype(np.float32))
    mm = np.load(path, mmap_mode="r")
    for s in (np.arange(5000, dtype=np.float32), mm, mm[100:4000]):
        spec = WindowSpec(x_len=50, seq_len=4, window_shift=3, hop=30, offsets=(0, 1))
        for v in example_frames(s, spec):
            assert np.shares_memory(v, s)
            assert not v.flags.writeable
            base = v
            while base.base is not None and isinstance(base.base, np.ndarray):
                base = base.base
            assert base is s or np.shares_memory(base, s)
            with pytest.raises(ValueError):
                v[0, 0, 0] = 1.0


def test_batch_gather_does_not_materialise():
    # window_shift 1: materialising would be ~1.5 GB of copies (np.take would try to).
    s = np.random.default_rng(1).standard_normal(200_000).astype(np.float32)
    spec = WindowSpec(x_len=500, seq_len=8, window_shift=1)
    ds = WindowDataset(s, spec, shift=0.1, scale=2.0)
    assert len(ds) * (spec.seq_len + 1) * spec.x_len * 4 > 1e9
    idx = [0, len(ds) - 1, 12345, 7]
    tracemalloc.start()
    batch = ds.__getitems__(idx)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * batch.numel() * 4 + 1_000_000
    for b, i in enumerate(idx):
        ref = (s[i : i + spec.span].reshape(spec.seq_len + 1, spec.x_len) - 0.1) / 2.0
        np.testing.assert_array_equal(batch[b].numpy(), ref)


@pytest.mark.parametrize("hop", [None, 3, 9])
def test_getitems_equals_getitem_and_naive_normalised(hop):
    rng = np.random.default_rng(2)
    s = (rng.standard_normal(3000) * 1000).astype(np.float32)
    spec = WindowSpec(x_len=7, seq_len=5, window_shift=11, hop=hop, offsets=(4, 0, 2))
    shift, scale = 12.345, 678.9
    ds = WindowDataset(s, spec, shift=shift, scale=scale)
    ref = naive_examples(s, 7, 5, 11, hop, (4, 0, 2))
    idx = rng.integers(-len(ds), len(ds), size=64).tolist()
    batch = ds.__getitems__(idx)
    assert batch.dtype == torch.float32 and batch.shape == (64, 6, 7)
    assert torch.equal(batch, torch.stack([ds[i] for i in idx]))
    naive = np.stack([(ref[i] - shift) / scale for i in idx])
    assert naive.dtype == np.float32
    np.testing.assert_array_equal(batch.numpy(), naive)  # bit-exact, divide not reciprocal


def test_transform_applied_batched():
    s = np.arange(400, dtype=np.float32)
    spec = WindowSpec(x_len=4, seq_len=3, window_shift=5)
    ds = WindowDataset(s, spec, shift=1.0, scale=2.0, transform=lambda t: torch.cat([t, -t], -1))
    b = ds.__getitems__([0, 3])
    assert b.shape == (2, 4, 8)
    assert torch.equal(b[1, :, :4], torch.from_numpy((s[15:31].reshape(4, 4) - 1.0) / 2.0))
    assert torch.equal(ds[3], b[1])


def test_ring_reuse():
    rng = np.random.default_rng(3)
    s = rng.standard_normal(2000).astype(np.float32)
    spec = WindowSpec(x_len=10, seq_len=3, window_shift=7)
    ds = WindowDataset(s, spec, shift=0.5, scale=3.0, reuse_buffers=True, ring=3)
    plain = WindowDataset(s, spec, shift=0.5, scale=3.0)
    ptrs = []
    for _ in range(7):
        idx = rng.integers(0, len(ds), 8).tolist()
        b = ds.__getitems__(idx)
        assert torch.equal(b, plain.__getitems__(idx))
        ptrs.append(b.data_ptr())
    assert len(set(ptrs[:3])) == 3  # consecutive batches use different buffers...
    assert ptrs[3:] == ptrs[:3] + ptrs[:1]  # ...cycling through the ring
    # A different batch size (the last, short batch of an epoch) has its own ring.
    assert ds.__getitems__([0, 1]).data_ptr() not in ptrs
    # Without reuse every batch is fresh: held batches stay valid.
    held = [plain.__getitems__([t]) for t in range(4)]
    for t, b in enumerate(held):
        assert torch.equal(b[0], plain[t])


def test_dataloader_uses_getitems():
    s = np.random.default_rng(4).standard_normal(5000).astype(np.float32)
    spec = WindowSpec(x_len=16, seq_len=4, window_shift=9, offsets=(0, 4))
    ds = WindowDataset(s, spec, shift=0.2, scale=1.5, reuse_buffers=True)
    loader = DataLoader(ds, batch_size=32, shuffle=False, collate_fn=identity_collate)
    batches = [b.clone() for b in loader]
    assert sum(len(b) for b in batches) == len(ds)
    assert torch.equal(torch.cat(batches), torch.stack([ds[i] for i in range(len(ds))]))


def test_negative_index_and_index_error():
    s = np.arange(100, dtype=np.float32)
    ds = WindowDataset(s, WindowSpec(x_len=5, seq_len=2, window_shift=10))
    n = len(ds)
    assert n == 9
    assert torch.equal(ds[-1], ds[n - 1])
    assert torch.equal(ds[-n], ds[0])
    for bad in (n, -n - 1, 1000):
        with pytest.raises(IndexError):
            ds[bad]
        with pytest.raises(IndexError):
            ds.__getitems__([0, bad])
    assert ds.__getitems__([]).shape == (0, 3, 5)


def test_too_short_signal_is_empty():
    ds = WindowDataset(np.zeros(10, np.float32), WindowSpec(x_len=5, seq_len=2, window_shift=1))
    assert len(ds) == 0
    with pytest.raises(IndexError):
        ds[0]


def test_pickle_memmap_reopens_instead_of_copying(tmp_path):
    path = tmp_path / "sig.npy"
    np.save(path, np.random.default_rng(5).standard_normal(100_000).astype(np.float32))
    mm = np.load(path, mmap_mode="r")
    ds = WindowDataset(mm[1000:90_000], WindowSpec(x_len=100, seq_len=3, window_shift=50))
    blob = pickle.dumps(ds)
    assert len(blob) < 10_000
    ds2 = pickle.loads(blob)
    assert len(ds2) == len(ds)
    assert torch.equal(ds2.__getitems__([0, 5, -1]), ds.__getitems__([0, 5, -1]))
    plain = WindowDataset(np.array(mm[:5000]), WindowSpec(x_len=100, seq_len=3, window_shift=50))
    assert torch.equal(pickle.loads(pickle.dumps(plain))[3], plain[3])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(x_len=0, seq_len=2, window_shift=1), "data.x_len"),
        (dict(x_len=4, seq_len=0, window_shift=1), "data.seq_len"),
        (dict(x_len=4, seq_len=2, window_shift=-3), "data.window_shift"),
        (dict(x_len=4, seq_len=2, window_shift=1, hop=0), "data.hop"),
        (dict(x_len=4, seq_len=2, window_shift=1, offsets=(0, -1)), "data.offsets"),
        (dict(x_len=4, seq_len=2, window_shift=1, offsets=()), "data.offsets"),
        (dict(x_len=2.5, seq_len=2, window_shift=1), "data.x_len"),
        (dict(x_len=4, seq_len=2, window_shift=2, offsets=(0, 2)), "data.offsets"),
    ],
)
def test_validation_names_the_field(kwargs, field):
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        WindowSpec(**kwargs)


def test_offsets_from_a_list():
    assert WindowSpec(4, 2, 3, offsets=[0, 1]).offsets == (0, 1)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 17, 1000, 4097])
def test_shuffle_sampler_is_a_permutation_per_epoch(n):
    s = ShuffleSampler(n, seed=7)
    first, second = list(s), list(s)
    assert sorted(first) == sorted(second) == list(range(n))
    assert len(s) == n
    if n > 10:
        assert first != second and first != sorted(first)
    s.set_epoch(0)
    assert list(s) == first  # set_epoch makes the order reproducible (DDP ranks agree)
    assert list(ShuffleSampler(n, seed=7)) == first


@pytest.mark.parametrize("n, replicas", [(10, 3), (1001, 4), (7, 2), (2, 3)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shuffle_sampler_ddp_shards(n, replicas, drop_last):
    parts = [list(ShuffleSampler(n, 3, replicas, r, drop_last)) for r in range(replicas)]
    assert len({len(p) for p in parts}) == 1  # equal counts, or DDP hangs
    assert all(len(p) == len(ShuffleSampler(n, 3, replicas, 0, drop_last)) for p in parts)
    flat = [i for p in parts for i in p]
    if drop_last:
        assert len(set(flat)) == len(flat) == n // replicas * replicas
    else:
        assert set(flat) == set(range(n)) and len(flat) == -(-n // replicas) * replicas


def test_shuffle_sampler_memory_does_not_grow_with_n():
    s = ShuffleSampler(50_000_000, seed=0)
    tracemalloc.start()
    it = iter(s)
    head = [next(it) for _ in range(1000)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20_000_000  # randperm(n).tolist() would be ~1.8 GB
    assert len(set(head)) == 1000 and max(head) < 50_000_000
    assert np.abs(np.diff(head)).mean() > 5_000_000  # spread over the range, not local


@pytest.mark.parametrize("workers", [0, 2])
def test_deferred_loader_draws_for_the_epoch_set_after_iter(workers):
    # Lightning calls iter() on the train loader, then set_epoch(); a multi-process loader
    # would prefetch indices inside iter() with the sampler's old epoch (a resumed run
    # replayed epoch 0's order). DeferredLoader starts at the first batch.
    from audiolstm.data.windows import DeferredLoader, RandomStartSampler

    ds = WindowDataset(np.arange(400, dtype=np.float32), WindowSpec(x_len=4, seq_len=1,
                                                                      window_shift=1))
    for sampler in (ShuffleSampler(len(ds), seed=5), RandomStartSampler(len(ds), 20, seed=5)):
        sampler.set_epoch(3)
        want = list(sampler)
        loader = DeferredLoader(ds, batch_size=5, sampler=sampler, collate_fn=identity_collate,
                                num_workers=workers, persistent_workers=workers > 0)
        sampler.set_epoch(0)
        it = iter(loader)  # what Lightning does when fitting starts (or resumes) ...
        sampler.set_epoch(3)  # ... before it sets the epoch
        got = [int(i) for b in it for i in (b[:, 0, 0].numpy())]
        assert got == want
