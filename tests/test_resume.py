"""Resume keeps the checkpoint's data (issue 20 item 1): the split plan, the fitted
normaliser, the settings; `ckpt_path=last` of the same configuration only."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiolstm.data.datamodule import AudioDataModule
from audiolstm.data.planning import plan_splits
from audiolstm.data.sources import load_corpus
from audiolstm.data.state import DataState
from audiolstm.errors import UserError
from audiolstm.training.resume import MAY_CHANGE, check_resumable, differences, find_last_checkpoint
from audiolstm.training.run import run
from tests.conftest import SMOKE, compose_cfg

SR = 16000
TINY = [*SMOKE, "model=lstm_300x1", "model.hidden_sizes=[8]", "data.x_len=200",
        "~callbacks.sample_generation", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "ridge_baseline=false",
        "callbacks.progress_bar._target_=audiolstm.training.callbacks.PlainProgressBar"]


def _write(path: Path, seconds: float, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.2 * np.random.default_rng(seed).standard_normal(int(seconds * SR))
    sf.write(path, x.astype(np.float32), SR, subtype="FLOAT")


def _folder(tmp_path: Path, n: int = 6) -> Path:
    music = tmp_path / "music"
    for i in range(n):
        _write(music / f"f{i:02d}.wav", 0.5 + 0.1 * i, i)
    return music


def _splits(run_dir: Path) -> dict[str, str]:
    table = json.loads((run_dir / "splits.json").read_text())["files"]
    return {r["name"]: r["split"] for r in table}


def _ckpt_plans(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The file -> split plan in the model's data state and in the datamodule's state."""
    ckpt = torch.load(path, weights_only=True)
    model = ckpt["audiolstm"]["data_state"]["meta"]["corpus"]["files"]
    dm = ckpt["AudioDataModule"]["meta"]["corpus"]["files"]
    return ({r["name"]: r["split"] for r in model}, {r["name"]: r["split"] for r in dm})


# --------------------------------------------------------------------------- end to end


def test_a_new_file_does_not_move_held_out_files(tmp_path: Path) -> None:
    """The issue's reproduction: 6 files split by file, one more added, resume.

    Mutants caught: run.py calling `dm.setup()` before the checkpoint's data state is
    loaded (the code the issue reported: the 7 files are planned again from the seed,
    and 4 of the 6 originals moved); the resumed checkpoint holding two plans (no
    `AdoptDataModuleState`: the model keeps the 6-file record, the datamodule has 7).
    """
    music = _folder(tmp_path)
    folder = ["data=folder", f"data.path={music}", "data.split_by=file", "data.seq_len=4",
              "data.window_shift=400"]
    run(compose_cfg([*TINY, *folder, "trainer.max_epochs=1"], tmp_path / "first"))
    before = _splits(tmp_path / "first")
    assert set(before.values()) == {"train", "val", "test"}
    _write(music / "f00a.wav", 0.7, 99)  # sorts second: shifts every later file
    last = tmp_path / "first/checkpoints/last.ckpt"
    run(compose_cfg([*TINY, *folder, "trainer.max_epochs=2", f"ckpt_path={last}"],
                    tmp_path / "resumed"))
    after = _splits(tmp_path / "resumed")
    assert {k: after[k] for k in before} == before  # every original file kept its split
    assert after["f00a.wav"] == "train"  # the new file joins train
    model_plan, dm_plan = _ckpt_plans(tmp_path / "resumed/checkpoints/last.ckpt")
    assert model_plan == dm_plan == after  # one plan, not two
    summary = json.loads((tmp_path / "resumed/summary.json").read_text())
    assert summary["resumed_from"] == str(last) and summary["files"]["train"] == 1 + sum(
        s == "train" for s in before.values())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of a tiny std/time model: the checkpoint the refusals are checked on."""
    out = tmp_path_factory.mktemp("trained")
    run(compose_cfg([*TINY, "trainer.max_epochs=1"], out))
    return out / "checkpoints/last.ckpt"


def test_resume_refuses_another_normalisation(trained: Path, tmp_path: Path) -> None:
    """norm=minmax on a std checkpoint: one line naming norm.scheme, nothing written.

    Mutant caught: the code the issue reported, which trained on with the checkpoint's
    std normaliser while config.yaml said minmax.
    """
    with pytest.raises(UserError) as e:
        run(compose_cfg([*TINY, "norm=minmax", "trainer.max_epochs=2",
                         f"ckpt_path={trained}"], tmp_path / "resumed"))
    msg = str(e.value)
    assert msg.startswith(f"ckpt_path={trained}: norm.scheme=minmax differs from the "
                          "checkpoint's std;") and "init_from=" in msg and "\n" not in msg
    assert not (tmp_path / "resumed").exists()


@pytest.mark.parametrize("override,field,now,then", [
    ("repr=rfft", "repr.kind", "rfft", "time"),
    ("repr.standardize=true", "repr.standardize", "True", "False"),
    ("data.x_len=100", "data.x_len", "100", "200"),
    ("data.hop=100", "data.hop", "100", "None"),
    ("data.batch_size=4", "data.batch_size", "4", "8"),
    ("data.split_seed=3", "data.split_seed", "3", "0"),
    ("data.train_examples_per_epoch=16", "data.train_examples_per_epoch", "16", "None"),
    ("data.synth_seconds=21", "data.synth_seconds", "21.0", "20.0"),
    ("model.hidden_sizes=[9]", "model.hidden_sizes", "[9]", "[8]"),
    ("model.optimizer.lr=0.01", "model.optimizer", "'lr': 0.01", "'lr': 0.001"),
    ("model.input_dropout=0.1", "model.input_dropout", "0.1", "0.0"),
    ("model=samplernn_2tier", "model.arch", "samplernn", "frame_rnn"),
])
def test_resume_refuses_any_other_recorded_setting(trained: Path, override: str, field: str,
                                                   now: str, then: str) -> None:
    """Each data/repr/model setting the checkpoint records, changed: refused, named.

    Mutant caught: a `differences` that skips a group (or compares only `norm`), and
    one that reads the model's settings from the new config instead of the checkpoint's
    hyper-parameters (the optimizer's lr would then be silently the checkpoint's,
    Lightning restoring Adam's state over it).
    """
    cfg = compose_cfg([*TINY, override])
    ckpt = torch.load(trained, weights_only=True)
    with pytest.raises(UserError) as e:
        check_resumable(cfg, ckpt, "x.ckpt")
    msg = str(e.value)
    assert msg.startswith(f"ckpt_path=x.ckpt: {field}=")
    head, _, tail = msg.partition(" differs from the checkpoint's ")
    assert now in head and then in tail.split(";")[0], msg


def test_what_may_change_on_resume_is_listed_once(trained: Path, tmp_path: Path) -> None:
    """The MAY_CHANGE fields (and unrecorded ones: trainer, seed, ...) are not refused,
    and the data state handed back is the checkpoint's (its normaliser, not a new fit).

    Mutant caught: a `differences` that ignores MAY_CHANGE (data.num_workers=2 refused),
    or one that compares everything it finds (trainer.max_epochs refused).
    """
    cfg = compose_cfg([*TINY, "data.num_workers=2", "data.pin_memory=true",
                       "data.decode_workers=3", f"data.cache_dir={tmp_path}",
                       "trainer.max_epochs=7", "seed=5", "logger=none"])
    ckpt = torch.load(trained, weights_only=True)
    assert differences(cfg, ckpt) == []
    assert sorted(MAY_CHANGE) == ["data.cache_dir", "data.decode_workers", "data.num_workers",
                                  "data.pin_memory"]
    state = check_resumable(cfg, ckpt, "x.ckpt")
    assert state == DataState.from_dict(ckpt["audiolstm"]["data_state"])
    # a checkpoint written before a setting existed: the schema default stands for it
    del ckpt["audiolstm"]["data_state"]["data"]["eval_window_shift"]
    del ckpt["hyper_parameters"]["scheduled_sampling"]
    assert differences(cfg, ckpt) == []
    assert differences(compose_cfg([*TINY, "data.eval_window_shift=50"]), ckpt)[0][:2] == (
        "data.eval_window_shift", 50)


# --------------------------------------------------------------------------- ckpt_path=last


def _place(src: Path, root: Path, rel: str, mtime: float, **changes: str) -> Path:
    """A copy of checkpoint `src` at root/train/<rel>/checkpoints/last.ckpt, its recorded
    `norm.scheme` (etc.) changed, written at `mtime`."""
    dst = root / "train" / rel / "checkpoints/last.ckpt"
    dst.parent.mkdir(parents=True)
    if changes:
        ckpt = torch.load(src, weights_only=True)
        for key, value in changes.items():
            group, name = key.split("__")
            ckpt["audiolstm"]["data_state"][group][name] = value
        torch.save(ckpt, dst)
    else:
        shutil.copy(src, dst)
    os.utime(dst, (mtime, mtime))
    return dst


def test_ckpt_path_last_takes_the_newest_of_the_same_configuration(
        trained: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Mutant caught: the newest last.ckpt of the task whatever its configuration (the
    code the issue reported: a sweep job of another norm would be resumed)."""
    mine = _place(trained, tmp_path, "runs/a", 1000)
    other = _place(trained, tmp_path, "multiruns/b/0_norm=minmax", 2000, norm__scheme="minmax")
    (tmp_path / "train/runs/c/checkpoints").mkdir(parents=True)
    junk = tmp_path / "train/runs/c/checkpoints/last.ckpt"
    junk.write_bytes(b"not a checkpoint")
    os.utime(junk, (3000, 3000))
    cfg = compose_cfg([*TINY, f"paths.log_dir={tmp_path}"])
    caplog.set_level("INFO", logger="audiolstm.training.resume")
    assert find_last_checkpoint(cfg) == mine
    assert f"resuming {mine}" in caplog.text and "2 newer one(s)" in caplog.text
    minmax = compose_cfg([*TINY, "norm=minmax", f"paths.log_dir={tmp_path}"])
    assert find_last_checkpoint(minmax) == other
    with pytest.raises(UserError, match=r"none of the 3 last.ckpt .* not a readable"):
        find_last_checkpoint(compose_cfg([*TINY, "data.x_len=100",
                                          f"paths.log_dir={tmp_path}"]))
    os.utime(junk, (10, 10))
    with pytest.raises(UserError, match=r"none of the 3 .*0_norm=minmax.*: data.x_len=100, "
                                        r"the checkpoint's 200"):
        find_last_checkpoint(compose_cfg([*TINY, "data.x_len=100",
                                          f"paths.log_dir={tmp_path}"]))
    with pytest.raises(UserError, match="no earlier run"):
        find_last_checkpoint(compose_cfg([*TINY, f"paths.log_dir={tmp_path / 'none'}"]))
    # the run's own directory is never its own resume
    with pytest.raises(UserError, match=r"none of the 2 "):
        find_last_checkpoint(cfg, exclude=tmp_path / "train/runs/a")


# --------------------------------------------------------------------------- plan_splits(recorded=)


def _data(tmp_path: Path, **kw) -> dict:
    return {"source": "folder", "path": str(tmp_path / "music"), "sample_rate": SR,
            "splits": [0.6, 0.2, 0.2], "x_len": 100, "seq_len": 3, "window_shift": 100,
            "batch_size": 4, "cache_dir": str(tmp_path / "cache"), "decode_workers": 1} | kw


def _plan(tmp_path: Path, recorded: dict | None = None, **kw):
    d = AudioDataModule(_data(tmp_path, **kw), {"scheme": "none"}, {"kind": "time"}).data_cfg
    corpus = load_corpus("folder", str(tmp_path / "music"), SR, tmp_path / "cache",
                         decode_workers=1)
    return corpus, plan_splits(corpus, d, recorded)


def _by_name(corpus, plan) -> dict[str, list[tuple[str, int, int]]]:
    """{file name: [(split, start - file start, end - file start), ...]} (naive)."""
    out: dict[str, list[tuple[str, int, int]]] = {f.name: [] for f in corpus.files}
    for split, pieces in plan.pieces.items():
        for p in pieces:
            f = corpus.files[p.file]
            out[f.name].append((split, p.start - f.start, p.end - f.start))
    return {k: sorted(v) for k, v in out.items()}


def test_recorded_file_splits_win_over_the_seed_and_new_files_join_train(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """split_by=file: the record, not `data.split_seed` or the file order, decides.

    Mutants caught: `plan_splits` ignoring `recorded` (a new seed reassigns files), and
    one sending a new file to the split the seed would give it instead of train.
    """
    _folder(tmp_path, 6)
    corpus, first = _plan(tmp_path, split_by="file", split_seed=0)
    record = first.to_dict(SR)
    was = {r["name"]: r["split"] for r in record["files"]}
    _, other = _plan(tmp_path, split_by="file", split_seed=1)
    assert {r["name"]: r["split"] for r in other.to_dict(SR)["files"]} != was  # seeds differ
    _write(tmp_path / "music/f00a.wav", 0.7, 99)
    caplog.set_level("WARNING")
    corpus, again = _plan(tmp_path, record, split_by="file", split_seed=1)
    now = {r["name"]: r["split"] for r in again.to_dict(SR)["files"]}
    assert now == was | {"f00a.wav": "train"}
    assert "1 file(s) were not in the checkpoint's corpus (first: f00a.wav)" in caplog.text
    # whole files: each piece is its file, in corpus order
    for name, pieces in _by_name(corpus, again).items():
        n = next(f.num_samples for f in corpus.files if f.name == name)
        assert pieces == [(now[name], 0, n)]


def test_recorded_time_splits_keep_val_and_test_and_new_files_join_train(tmp_path: Path
                                                                         ) -> None:
    """split_by=time: the checkpoint's files keep their cuts, a new file is all train.

    Mutant caught: cutting the new file by time too (its last 40 % would join val and
    test, changing the curves early stopping compares).
    """
    _folder(tmp_path, 3)
    _, first = _plan(tmp_path)
    record = first.to_dict(SR)
    _write(tmp_path / "music/f00a.wav", 0.7, 99)
    corpus, again = _plan(tmp_path, record)
    got = _by_name(corpus, again)
    for i in range(3):  # naive: 60/20/20 of each original file
        n = int((0.5 + 0.1 * i) * SR)
        a, b = round(0.6 * n), round(0.8 * n)
        assert got[f"f{i:02d}.wav"] == [("test", b, n), ("train", 0, a), ("val", a, b)]
    assert got["f00a.wav"] == [("train", 0, int(0.7 * SR))]


@pytest.mark.parametrize("split_by", ["time", "file"])
def test_a_missing_or_changed_recorded_file_is_refused(tmp_path: Path, split_by: str) -> None:
    """Mutant caught: a plan that quietly drops a checkpoint's test file (or re-cuts one
    that changed length), shrinking the held-out split under a resumed run."""
    _folder(tmp_path, 4)
    _, first = _plan(tmp_path, split_by=split_by)
    record = first.to_dict(SR)
    _write(tmp_path / "music/f02.wav", 0.8, 2)  # was 0.7 s
    with pytest.raises(UserError, match=r"f02.wav lasts 0.800 s, 0.700 s in the checkpoint's"):
        _plan(tmp_path, record, split_by=split_by)
    (tmp_path / "music/f02.wav").unlink()
    with pytest.raises(UserError, match=r"f02.wav is in the checkpoint's corpus \((train|val|"
                                        r"test|all) split\) but not here"):
        _plan(tmp_path, record, split_by=split_by)
    other = "time" if split_by == "file" else "file"
    _write(tmp_path / "music/f02.wav", 0.7, 2)
    with pytest.raises(UserError, match=f"data.split_by={other}: the checkpoint's corpus was "
                                        f"split by {split_by}"):
        _plan(tmp_path, record, split_by=other)


def test_a_set_up_datamodule_plans_again_from_a_restored_record(tmp_path: Path) -> None:
    """Lightning calls `load_state_dict` after `setup`: the plan must follow the record.

    Mutant caught: `load_state_dict` that only stores the record (today's): the plan
    drawn at setup, from the new seed, stays.
    """
    _folder(tmp_path, 6)
    old = AudioDataModule(_data(tmp_path, split_by="file", split_seed=0), {"scheme": "std"},
                          {"kind": "time"})
    old.setup()
    dm = AudioDataModule(_data(tmp_path, split_by="file", split_seed=1), {"scheme": "std"},
                         {"kind": "time"})
    dm.setup()
    assert [r.split for r in dm.files] != [r.split for r in old.files]
    dm.load_state_dict(old.state_dict())
    assert [r.split for r in dm.files] == [r.split for r in old.files]
    assert dm.normalizer == old.normalizer  # the checkpoint's fit, not one on new train files
    assert dm.data_state().meta["corpus"] == old.data_state().meta["corpus"]
