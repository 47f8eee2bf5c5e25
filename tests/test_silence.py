"""Silence-aware data (issue 22 item 2): examples mostly in silent blocks are never drawn.

Everything is checked against naive reference code: a slicing loop over every start
(or every window of the seeds' loop) that computes its silent share from per-block RMS
taken one slice at a time, and a per-sample mask for the seconds no example reads.
"""

from __future__ import annotations

import json
import logging
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from audiolstm.analysis.explore import ExploreOptions, explore_signal
from audiolstm.analysis.explore.study import load
from audiolstm.config import validate_train
from audiolstm.data import silence
from audiolstm.data.datamodule import AudioDataModule
from audiolstm.data.silence import (
    SilenceSettings,
    allowed_starts,
    block_length,
    piece_silence,
    silent_blocks,
)
from audiolstm.data.splits import SPLITS, Piece, file_table
from audiolstm.data.windows import (
    Intervals,
    RandomStartSampler,
    ShuffleSampler,
    WindowDataset,
    WindowSpec,
)
from audiolstm.errors import UserError
from tests.conftest import compose_cfg, run_script

SR = 16000
DB = -60.0
LOUD, QUIET = 0.3, 1e-4  # -10 dBFS and -80 dBFS blocks


# --------------------------------------------------------------------------- references


def naive_block_silence(x: np.ndarray, block: int, db: float) -> np.ndarray:
    """Per sample: does its block (grid from x[0]) have an RMS below db dBFS? Slice by slice."""
    out = np.zeros(x.size, bool)
    for a in range(0, x.size, block):
        seg = x[a : a + block].astype(np.float64)
        out[a : a + block] = math.sqrt(float(np.mean(seg**2))) < 10 ** (db / 20)
    return out


def naive_allowed(x: np.ndarray, block: int, db: float, span: int, frac: float) -> list[int]:
    """Every start whose example's silent share is at most `frac`, one slice at a time."""
    silent = naive_block_silence(x, block, db)
    return [a for a in range(x.size - span + 1) if silent[a : a + span].sum() / span <= frac]


def naive_starts(n: int, spec: WindowSpec) -> list[int]:
    """The seeds' loop: every example start of one piece, offset by offset."""
    out = []
    for o in spec.offsets:
        a = o
        while a + spec.span <= n:
            out.append(a)
            a += spec.window_shift
    return out


def expand(iv: Intervals) -> list[int]:
    return [a for lo, hi in zip(iv.lo.tolist(), iv.hi.tolist(), strict=True)
            for a in range(lo, hi)]


def blocky(amps: list[float], block: int, n: int, seed: int) -> np.ndarray:
    """n samples of noise whose level changes block by block (the last block may be cut)."""
    rng = np.random.default_rng(seed)
    level = np.repeat(np.asarray(amps, np.float64), block)[:n]
    return (level * rng.standard_normal(n)).astype(np.float32)


# --------------------------------------------------------------------------- the math


@settings(max_examples=300, deadline=None)
@given(block=st.integers(1, 7), n=st.integers(0, 90), span=st.integers(1, 40),
       frac=st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.floats(0, 1)),
       seed=st.integers(0, 2**16), data=st.data())
def test_allowed_starts_equal_a_slicing_loop_over_every_start(block, n, span, frac, seed, data):
    """Mutants caught: the rising stretch's end without its +1 (`p + room`); the sample
    entering a stretch located one sample early (`(p + span - 1) // block`); the last,
    shorter block counted whole in `silent_samples`."""
    amps = data.draw(st.lists(st.sampled_from([0.0, QUIET, LOUD]), min_size=-(-n // block),
                              max_size=-(-n // block)))
    x = blocky(amps, block, n, seed)
    flags = silent_blocks(x, block, DB)
    np.testing.assert_array_equal(np.repeat(flags, block)[:n], naive_block_silence(x, block, DB))
    got = allowed_starts(flags, n, block, span, math.floor(frac * span))
    assert expand(got) == naive_allowed(x, block, DB, span, frac)
    assert silence.silent_samples(flags, n, block) == int(naive_block_silence(x, block, DB).sum())


def test_silent_blocks_streamed_in_chunks_equal_one_slice_per_block(monkeypatch) -> None:
    """Mutant caught: the chunk not rounded to whole blocks (blocks cut at chunk edges)."""
    x = blocky([LOUD, QUIET, 0.0, LOUD, QUIET] * 9, 13, 13 * 45 - 5, 1)
    monkeypatch.setattr(silence, "CHUNK", 30)  # 2 blocks of 13 per chunk: many edges
    np.testing.assert_array_equal(np.repeat(silent_blocks(x, 13, DB), 13)[: x.size],
                                  naive_block_silence(x, 13, DB))


def test_digital_silence_and_quiet_music_against_the_threshold() -> None:
    """Full scale is the reference: a pianissimo at -50 dBFS stays, dither at -90 goes."""
    t = np.arange(SR) / SR
    pp = (10 ** (-50 / 20) * np.sqrt(2) * np.sin(2 * np.pi * 30 * t)).astype(np.float32)
    dither = (10 ** (-90 / 20) * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)
    block = block_length(SR)
    assert block == 800
    assert not silent_blocks(pp, block, DB).any()  # 30 Hz: 1.5 periods per block, RMS -50 dB
    assert silent_blocks(dither, block, DB).all()
    assert silent_blocks(np.zeros(SR, np.float32), block, DB).all()
    assert not silent_blocks(pp, block, -50.5).any() and silent_blocks(pp, block, -49.5).all()


# --------------------------------------------------------------------------- windows


@st.composite
def filtered_corpora(draw):
    block = draw(st.integers(1, 6))
    x_len = draw(st.integers(1, 6))
    seq_len = draw(st.integers(1, 4))
    hop = draw(st.one_of(st.none(), st.integers(1, 2 * x_len)))
    shift = draw(st.integers(1, 40))
    offsets = draw(st.lists(st.integers(0, 10), min_size=1, max_size=3,
                            unique_by=lambda o: o % shift))
    lengths = draw(st.lists(st.integers(0, 120), min_size=1, max_size=4))
    amps = [draw(st.lists(st.sampled_from([0.0, QUIET, LOUD]), min_size=-(-n // block),
                          max_size=-(-n // block))) for n in lengths]
    frac = draw(st.sampled_from([0.0, 0.3, 0.5, 0.99]))
    return WindowSpec(x_len, seq_len, shift, hop, tuple(offsets)), block, lengths, amps, frac


@settings(max_examples=250, deadline=None)
@given(filtered_corpora(), st.integers(0, 2**16))
def test_windows_keep_exactly_the_examples_a_naive_loop_keeps(case, seed):
    """Every kept example, in order (segment, offset, start), its frames, and nothing else;
    the piece's records (examples, kept, seconds read before/after) against a sample mask.

    Mutants caught: the first example number of a run rounded down (a start before the
    interval kept); the seconds no example reads counted with a run's last window at k1
    instead of k1 - 1."""
    spec, block, lengths, amps, frac = case
    files = [blocky(a, block, n, seed + i) for i, (a, n) in enumerate(zip(amps, lengths,
                                                                           strict=True))]
    signal = np.concatenate(files)
    bounds = np.cumsum([0] + lengths)
    sets = SilenceSettings(DB, frac)
    ps = [piece_silence(signal, Piece(i, int(a), int(b)), spec, sets, block, True)
          for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]
    ds = WindowDataset(signal, spec, segments=list(zip(bounds[:-1], bounds[1:], strict=True)),
                       allowed=[p.allowed for p in ps])
    want = []
    for i, x in enumerate(files):
        silent = naive_block_silence(x, block, DB)
        starts = naive_starts(x.size, spec)
        kept = [a for a in starts if silent[a : a + spec.span].sum() / spec.span <= frac]
        want += [(i, int(bounds[i]) + a) for a in kept]
        read, read_kept = np.zeros(x.size, bool), np.zeros(x.size, bool)
        for a in starts:
            read[a : a + spec.span] = True
        for a in kept:
            read_kept[a : a + spec.span] = True
        p = ps[i]
        assert (p.examples, p.kept) == (len(starts), len(kept))
        assert (p.read, p.read_kept) == (read.sum(), read_kept.sum())
        assert p.silent_samples == silent.sum()
    assert len(ds) == len(want)
    assert [ds.start_of(i) for i in range(len(ds))] == want
    assert ds.counts_per_segment() == [p.kept for p in ps]
    if want:
        got = ds.__getitems__(list(range(len(ds)))).numpy()
        ref = np.stack([np.stack([signal[a + j * spec.step : a + j * spec.step + spec.x_len]
                                  for j in range(spec.seq_len + 1)]) for _, a in want])
        np.testing.assert_array_equal(got, ref)


def test_the_index_grows_with_blocks_not_with_starts() -> None:
    """5 min at window_shift 1 (4.8 M starts; 2.3 M allowed): 1 s of music, 0.2 s of silence, ...

    Mutant caught: allowed starts listed (a mask or an index array per start: >= 4.8 MB)."""
    n, block = 5 * 60 * SR, block_length(SR)
    amps = ([LOUD] * 20 + [0.0] * 4) * (n // (24 * block) + 1)
    x = blocky(amps, block, n, 0)
    flags = silent_blocks(x, block, DB)
    spec = WindowSpec(x_len=400, seq_len=20, window_shift=1)
    tracemalloc.start()
    iv = allowed_starts(flags, n, block, spec.span, spec.span // 10)
    ds = WindowDataset(x, spec, allowed=[iv])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(iv) == 250 and len(ds) == iv.total > 2_000_000  # one interval per loud second
    # O(blocks): 12 k breakpoints in a dozen int64 arrays, ~1 MB at the peak; one bool
    # per start would be 4.8 MB, one int64 38 MB
    assert peak < 3_000_000, peak


# --------------------------------------------------------------------------- the datamodule


def _write(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, SR, subtype="FLOAT")


def _corpus(tmp_path: Path) -> list[np.ndarray]:
    """Three files of 50 ms blocks: music with silent gaps, a quiet lead-in, a pause."""
    b = block_length(SR)
    files = [
        blocky([LOUD] * 30 + [0.0] * 12 + [LOUD] * 20 + [QUIET] * 8 + [LOUD] * 10, b, 80 * b, 1),
        blocky([0.0] * 20 + [LOUD] * 60, b, 80 * b - 123, 2),
        blocky([LOUD] * 10 + [QUIET] * 30 + [LOUD] * 60, b, 100 * b, 3),
    ]
    for i, x in enumerate(files):
        _write(tmp_path / "music" / f"f{i}.wav", x)
    return files


def _dm(tmp_path: Path, **kw) -> AudioDataModule:
    d = {"source": "folder", "path": str(tmp_path / "music"), "sample_rate": SR,
         "splits": [0.6, 0.2, 0.2], "x_len": 400, "seq_len": 9, "window_shift": 700,
         "batch_size": 8, "cache_dir": str(tmp_path / "cache"), "decode_workers": 1,
         "silence_db": DB, "max_silent_fraction": 0.25} | kw
    dm = AudioDataModule(d, {"scheme": "std"}, {"kind": "time"}, seed=5)
    dm.setup()
    return dm


def _kept_starts(dm: AudioDataModule, split: str, frac: float | None) -> list[int]:
    """Naive: every window start (corpus position) of `split` whose silent share <= frac."""
    spec, block = dm.spec_for(split), block_length(SR)
    out = []
    for p in dm.plan.pieces[split]:
        x = dm.signal[p.start : p.end]
        silent = naive_block_silence(x, block, DB)
        out += [p.start + a for a in naive_starts(p.length, spec)
                if frac is None or silent[a : a + spec.span].sum() / spec.span <= frac]
    return out


def test_sliding_windows_drop_silent_examples_train_only_and_record_them(tmp_path, caplog):
    _corpus(tmp_path)
    with caplog.at_level(logging.INFO):
        dm = _dm(tmp_path)
    ds = dm.dataset("train")
    want = _kept_starts(dm, "train", 0.25)
    assert 0 < len(want) < len(_kept_starts(dm, "train", None))
    assert [ds.start_of(i)[1] for i in range(len(ds))] == want
    for split in ("val", "test"):  # every window unless data.silence_eval=true
        v = dm.dataset(split)
        assert [v.start_of(i)[1] for i in range(len(v))] == _kept_starts(dm, split, None)
    # an epoch is a permutation of the kept examples; DDP ranks share them out
    assert sorted(ShuffleSampler(len(ds), seed=1)) == list(range(len(ds)))
    ranks = [list(ShuffleSampler(len(ds), seed=1, num_replicas=2, rank=r)) for r in (0, 1)]
    assert set(ranks[0]) | set(ranks[1]) == set(range(len(ds)))
    # the record: splits.json, the checkpoint's data state, summary.json's examples
    rec = json.loads(dm.write_splits(tmp_path).read_text())
    assert rec["silence"]["filtered_splits"] == ["train"] and rec["silence"]["block_samples"] == 800
    assert rec["splits"]["train"]["examples"] == len(want) == dm.split_summary()["examples"]["train"]
    rows = file_table(dm.data_state().meta)
    block, spec = block_length(SR), dm.spec_for("train")
    for row, p in zip(rows, dm.plan.pieces["train"], strict=True):
        x = dm.signal[p.start : p.end]
        silent = naive_block_silence(x, block, DB)
        starts = naive_starts(p.length, spec)
        read, read_kept = np.zeros(p.length, bool), np.zeros(p.length, bool)
        for a in starts:
            read[a : a + spec.span] = True
            if silent[a : a + spec.span].sum() / spec.span <= 0.25:
                read_kept[a : a + spec.span] = True
        t = row.silence["train"]
        assert row.examples["train"] == sum(1 for a in want if p.start <= a < p.end)
        assert t["excluded_examples"] == len(starts) - row.examples["train"]
        assert t["silent_seconds"] == pytest.approx(silent.sum() / SR)
        assert t["excluded_seconds"] == pytest.approx((read.sum() - read_kept.sum()) / SR)
        assert t["excluded_share"] == pytest.approx(t["excluded_seconds"] / (p.length / SR))
        assert set(row.silence["val"]) == {"silent_seconds"}  # val keeps every window
    assert sum(r.silence["train"]["excluded_seconds"] for r in rows) > 0
    assert "the train split leaves out" in caplog.text and "f0.wav" in caplog.text


def test_silence_eval_filters_validation_and_test_too(tmp_path: Path) -> None:
    _corpus(tmp_path)
    dm = _dm(tmp_path, silence_eval=True, max_silent_fraction=0.0, window_shift=300)
    for split in SPLITS:
        ds = dm.dataset(split)
        assert [ds.start_of(i)[1] for i in range(len(ds))] == _kept_starts(dm, split, 0.0)
    assert len(_kept_starts(dm, "val", 0.0)) < len(_kept_starts(dm, "val", None))
    assert json.loads(dm.write_splits(tmp_path).read_text())["silence"]["filtered_splits"] == \
        list(SPLITS)


def test_random_crops_draw_uniformly_among_allowed_starts_only(tmp_path: Path) -> None:
    """Every draw is an allowed start (a naive loop over every start), all are drawn
    uniformly (chi-square), DDP ranks deal one stream, each epoch is seeded.

    Mutant caught: the run search in `WindowDataset._locate` with side="left" (each run's
    first index read one past the previous run's end: a start that is not allowed)."""
    _corpus(tmp_path)
    dm = _dm(tmp_path, train_examples_per_epoch=64, window_shift=8000, eval_window_shift=700)
    ds = dm.dataset("train")
    want = _kept_starts(dm, "train", 0.25)
    every = _kept_starts(dm, "train", None)
    assert len(every) == sum(p.length - dm.crop_spec.span + 1 for p in dm.plan.pieces["train"])
    starts = np.array([ds.start_of(i)[1] for i in range(len(ds))])
    assert starts.tolist() == want and len(want) < len(every)
    draws = 200_000
    counts = np.bincount(np.fromiter(RandomStartSampler(len(ds), draws, seed=3), np.int64),
                         minlength=len(ds))
    expected = draws / len(ds)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = len(ds) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof)
    ranks = [RandomStartSampler(len(ds), 64, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    one = list(RandomStartSampler(len(ds), 64, seed=3))
    assert list(ranks[0]) == one[0::2] and list(ranks[1]) == one[1::2]
    loader = dm.train_dataloader()  # the loader draws from this dataset, seeded per epoch
    loader.sampler.set_epoch(1)
    first = [b.clone() for b in loader]
    loader.sampler.set_epoch(1)
    assert all(np.array_equal(x, y) for x, y in zip(first, loader, strict=True))
    loader.sampler.set_epoch(1)
    idx = list(loader.sampler)
    assert np.array_equal(first[0].numpy(), ds.__getitems__(idx[:8]).numpy())


def test_every_example_silent_is_one_line(tmp_path: Path) -> None:
    _corpus(tmp_path)
    with pytest.raises(UserError) as e:
        _dm(tmp_path, silence_db=-5.0, max_silent_fraction=0.0)
    msg = str(e.value)
    assert "data.max_silent_fraction=0" in msg and "data.silence_db=-5" in msg
    assert "train" in msg and "\n" not in msg


# --------------------------------------------------------------------------- settings


BAD = [
    (["data.silence_db=60", "data.max_silent_fraction=0.5"], "data.silence_db=60"),
    (["data.silence_db=0", "data.max_silent_fraction=0.5"], "data.silence_db=0"),
    (["data.silence_db=-60", "data.max_silent_fraction=1.5"], "data.max_silent_fraction=1.5"),
    (["data.silence_db=-60", "data.max_silent_fraction=-0.1"], "data.max_silent_fraction=-0.1"),
    (["data.max_silent_fraction=0.5"], "needs data.silence_db"),
    (["data.silence_db=-60"], "read only with data.max_silent_fraction"),
    (["data.silence_eval=true"], "data.silence_eval=true"),
]


@pytest.mark.parametrize("overrides,needle", BAD, ids=lambda v: str(v))
def test_bad_silence_settings_are_one_line_naming_the_field(overrides, needle) -> None:
    with pytest.raises(UserError) as e:
        validate_train(compose_cfg(overrides))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_off_by_default_and_valid_settings_pass() -> None:
    cfg = compose_cfg([])
    assert SilenceSettings.from_config(cfg.data) is None
    validate_train(compose_cfg(["data.silence_db=-60", "data.max_silent_fraction=0"]))
    validate_train(compose_cfg(["data.silence_db=-60", "data.max_silent_fraction=1",
                                "data.silence_eval=true"]))


@pytest.mark.slow  # a fresh interpreter with Hydra: ~5-15 s on 2 cores (runs in CI)
def test_cli_refuses_a_threshold_out_of_range(tmp_path: Path) -> None:
    res = run_script("train.py", "data.silence_db=6", "data.max_silent_fraction=0.5",
                     f"hydra.run.dir={tmp_path / 'r'}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.silence_db=6" in lines[0], res.stderr
    assert not (tmp_path / "r" / "splits.json").exists()


# --------------------------------------------------------------------------- explore


def test_explore_shows_what_training_leaves_out_per_file(tmp_path: Path) -> None:
    _corpus(tmp_path)
    dm = _dm(tmp_path)
    cfg = compose_cfg(["data=folder", f"data.path={tmp_path / 'music'}",
                       f"data.cache_dir={tmp_path / 'cache'}", "data.splits=[0.6,0.2,0.2]",
                       "data.x_len=400", "data.seq_len=9", "data.window_shift=700",
                       f"data.silence_db={DB}", "data.max_silent_fraction=0.25",
                       "data.decode_workers=1"], config_name="explore")
    signal, meta, ranges, rule, ts = load(cfg.data, ExploreOptions())
    assert ts is not None
    rows = file_table(dm.data_state().meta)
    assert [f["splits"] for f in ts["files"]] == [r.silence for r in rows]  # as training says
    r = explore_signal(signal, SR, meta, ExploreOptions(), tmp_path / "out", ranges, rule, ts)
    md = (tmp_path / "out" / "explore.md").read_text()
    assert "train left out (s)" in md and "## Silence-aware training data" in md
    first = rows[0].silence["train"]
    assert f"| {first['excluded_seconds']:.4g} | {100 * first['excluded_share']:.3g} |" in md
    assert r["training_silence"]["splits"]["train"]["excluded_examples"] > 0
