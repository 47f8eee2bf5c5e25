"""AudioDataModule: splits, loaders, state round trip, and data-level bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiolstm.data.datamodule import AudioDataModule, ShardSampler
from audiolstm.data.splits import split_bounds
from audiolstm.data.state import DataState
from audiolstm.errors import UserError
from tests.conftest import run_script


def _data(tmp_path: Path, **kw) -> dict:
    base = {"source": "synthetic", "path": None, "sample_rate": 16000, "synth_seconds": 12.0,
            "synth_seed": 0, "splits": [0.8, 0.1, 0.1], "x_len": 400, "seq_len": 4, "hop": None,
            "window_shift": 400, "offsets": [0], "eval_window_shift": None, "batch_size": 5,
            "num_workers": 0, "pin_memory": None, "cache_dir": str(tmp_path / "cache")}
    return base | kw


def _wav(path: Path, x: np.ndarray, sr: int = 16000) -> Path:
    sf.write(path, x.astype(np.float32), sr, subtype="FLOAT")
    return path


def test_split_bounds_are_contiguous_and_cover_everything() -> None:
    b = split_bounds(1000, [0.8, 0.1, 0.1])
    assert b == {"train": (0, 800), "val": (800, 900), "test": (900, 1000)}
    b = split_bounds(7, [0.5, 0.25, 0.25])
    assert b["train"][0] == 0 and b["test"][1] == 7 and b["train"][1] == b["val"][0]


def test_loader_shapes_dtypes_and_normalisation(tmp_path: Path) -> None:
    dm = AudioDataModule(_data(tmp_path), {"scheme": "std"}, {"kind": "time"})
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (5, 5, 400) and batch.dtype == torch.float32
    val = next(iter(dm.val_dataloader()))
    # val batch 0 is example 0 of the val split, normalised with the train statistics
    train = np.asarray(dm.splits["train"], np.float64)
    shift, scale = train.mean(), train.std()  # std: the train mean and (population) std
    expected = (np.asarray(dm.splits["val"][: 5 * 400 + 400]).reshape(-1, 400) - shift) / scale
    np.testing.assert_allclose(val[0].numpy(), expected[:5], rtol=1e-6, atol=1e-6)
    assert dm.input_dim == 400


@pytest.mark.parametrize("kind,dim", [("fft", 800), ("rfft", 400)])
def test_representations_change_input_dim(tmp_path: Path, kind: str, dim: int) -> None:
    dm = AudioDataModule(_data(tmp_path), {"scheme": "std"}, {"kind": kind, "standardize": True})
    dm.setup()
    assert dm.input_dim == dim
    assert next(iter(dm.train_dataloader())).shape[-1] == dim


def test_train_is_shuffled_val_is_not(tmp_path: Path) -> None:
    dm = AudioDataModule(_data(tmp_path, batch_size=1000), {"scheme": "none"}, {"kind": "time"})
    dm.setup()
    n = len(dm.dataset("train"))
    train = next(iter(dm.train_dataloader()))
    val = next(iter(dm.val_dataloader()))
    firsts = train[:, 0, 0].numpy()
    ordered = np.asarray(dm.splits["train"][: n * 400 : 400])
    assert not np.array_equal(firsts, ordered) and np.allclose(np.sort(firsts), np.sort(ordered))
    assert np.array_equal(val[:, 0, 0].numpy(),
                          np.asarray(dm.splits["val"][: len(val) * 400 : 400]))


def test_shard_sampler_covers_every_example_once() -> None:
    shards = [list(ShardSampler(10, 3, r)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(10))


def test_state_round_trip_needs_no_training_data(tmp_path: Path) -> None:
    wav = _wav(tmp_path / "a.wav", np.random.default_rng(0).standard_normal(16000 * 4) * 0.1)
    cfg = _data(tmp_path, source="wav", path=str(wav))
    dm = AudioDataModule(cfg, {"scheme": "minmax_union"}, {"kind": "rfft", "standardize": True})
    dm.setup()
    state = DataState.from_dict(dm.state_dict())  # what a checkpoint stores
    wav.unlink()  # the training data is gone
    other = AudioDataModule.from_data_state(state)
    assert other.normalizer == dm.normalizer
    x = torch.randn(2, 400)
    assert torch.equal(other.representation.encode(x), dm.representation.encode(x))
    assert other.input_dim == dm.input_dim


def test_train_only_fit_ignores_val_and_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(16000 * 5).astype(np.float32) * 0.1
    y = x.copy()
    y[int(0.8 * len(y)) :] *= 50  # louder val/test
    stats = []
    for i, sig in enumerate((x, y)):
        cfg = _data(tmp_path, source="wav", path=str(_wav(tmp_path / f"{i}.wav", sig)))
        dm = AudioDataModule(cfg, {"scheme": "std"}, {"kind": "time"})
        dm.setup()
        stats.append(dm.normalizer.affine("train"))
    assert stats[0] == stats[1]


def test_silent_training_split_is_an_error(tmp_path: Path) -> None:
    x = np.zeros(16000 * 5, dtype=np.float32)
    x[int(0.85 * len(x)) :] = 0.1
    cfg = _data(tmp_path, source="wav", path=str(_wav(tmp_path / "silent.wav", x)))
    with pytest.raises(UserError, match="silent"):
        AudioDataModule(cfg, {"scheme": "std"}, {"kind": "time"}).setup()


def test_too_short_says_the_minimum_duration(tmp_path: Path) -> None:
    cfg = _data(tmp_path, source="wav",
                path=str(_wav(tmp_path / "short.wav", np.random.randn(16000))))
    with pytest.raises(UserError) as e:
        AudioDataModule(cfg, {"scheme": "std"}, {"kind": "time"}).setup()
    msg = str(e.value)
    # one example spans (4 + 1) * 400 samples = 0.125 s; the 0.1 splits need 1.25 s in total
    assert "short.wav" in msg and "0.125 s" in msg and "at least 1.25 s" in msg
    assert "\n" not in msg


@pytest.mark.slow  # ~15-30 s on 2 cores: runs in CI (make test-slow)
def test_bad_inputs_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notaudio.wav").write_text("hello, I am text")
    nan = np.random.randn(16000 * 3).astype(np.float32)
    nan[5000] = np.nan
    _wav(tmp_path / "nan.wav", nan)
    cases = [
        (["data=folder", f"data.path={tmp_path}/empty"], "no audio"),
        (["data=wav", f"data.path={tmp_path}/notaudio.wav"], "notaudio.wav"),
        (["data=wav", f"data.path={tmp_path}/nan.wav"], "non-finite"),
        (["data=wav"], "data.path"),
    ]
    for args, needle in cases:
        res = run_script("train.py", *args, f"hydra.run.dir={tmp_path / 'r'}")
        assert res.returncode != 0, args
        err = res.stderr.strip().splitlines()
        assert "Traceback" not in res.stderr, res.stderr
        assert any(needle in line for line in err), (args, res.stderr)
