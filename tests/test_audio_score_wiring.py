"""The audio score where audio is made: generated.json, the sample callback (W&B scalars,
best-audio.ckpt), summary.json, the report's columns and ranking, and the bad inputs."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from audiolstm.config import validate_train
from audiolstm.errors import UserError
from audiolstm.evaluation.audio_score import ScoreSettings
from audiolstm.generation import scoring
from audiolstm.runinfo import RANKABLE, SAMPLE_FIELDS, SUMMARY_FIELDS
from audiolstm.training import callbacks as cb
from audiolstm.training.run import run
from tests.conftest import SMOKE, compose_cfg
from tests.test_audio_score import melody

SR = 16_000
TINY = [*SMOKE, "model=lstm_300x1", "model.hidden_sizes=[16]", "data.x_len=400"]


# ------------------------------------------------------------------------------ settings


def test_yaml_thresholds_are_the_dataclass_defaults() -> None:
    """conf/generate.yaml and conf/callbacks/default.yaml list the thresholds so that
    `score_settings.silence_db=-50` needs no `+`; they must stay ScoreSettings' defaults."""
    want = dataclasses.asdict(ScoreSettings())
    gen = compose_cfg([], config_name="generate")
    train = compose_cfg([])
    assert dict(gen.score_settings) == want and gen.score == "auto" and gen.reference is None
    node = train.callbacks.sample_generation
    assert dict(node.score_settings) == want and node.score == "auto"
    assert node.keep_best_audio is False and node.keep_sampled is False


@pytest.mark.parametrize("overrides,message", [
    (["callbacks.sample_generation.score=sometimes"],
     "callbacks.sample_generation.score='sometimes' is not one of auto, true, false"),
    (["callbacks.sample_generation.score_settings.loop_threshold=1.5"],
     "callbacks.sample_generation.score_settings.loop_threshold=1.5 must be in (0, 1]"),
    (["callbacks.sample_generation.score_settings.silence_db=3"],
     "callbacks.sample_generation.score_settings.silence_db=3 must be in [-120, 0) dB"),
    (["callbacks.sample_generation.score=false",
      "callbacks.sample_generation.score_settings.rms_low=0.1"],
     "callbacks.sample_generation.score_settings.rms_low=0.1 has no effect with "
     "callbacks.sample_generation.score=false"),
    (["callbacks.sample_generation.score=false", "callbacks.sample_generation.keep_best_audio=true"],
     "callbacks.sample_generation.keep_best_audio=true needs the audio score"),
    (["callbacks.sample_generation.every_n_epochs=0",
      "callbacks.sample_generation.keep_best_audio=true"],
     "callbacks.sample_generation.keep_best_audio=true needs samples during training"),
    (["callbacks.sample_generation.every_n_epochs=0",
      "callbacks.sample_generation.keep_sampled=true"],
     "callbacks.sample_generation.keep_sampled=true needs samples during training"),
])
def test_bad_sample_score_settings_stop_before_any_data(overrides: list[str], message: str
                                                        ) -> None:
    with pytest.raises(UserError) as e:
        validate_train(compose_cfg(overrides))
    assert str(e.value).startswith(message), str(e.value)


# ------------------------------------------------------------------------- generate.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train")
    run(compose_cfg([*TINY, "~callbacks.sample_generation"], out))
    return out / "checkpoints/last.ckpt"


def _generate(ckpt: Path, out: Path, *overrides: str) -> dict[str, Any]:
    from audiolstm.generation.pipeline import run as generate

    cfg = compose_cfg([f"ckpt_path={ckpt}", "seed.seconds=0.5", *overrides], out,
                      config_name="generate")
    return generate(cfg)


def test_generated_json_scores_against_a_reference_file(checkpoint: Path,
                                                        tmp_path: Path) -> None:
    """reference=PATH: the generated part (not the seed) is scored against that file, and
    generated.json says which reference and which thresholds."""
    ref = tmp_path / "ref.wav"
    sf.write(ref, melody(30.0, seed=1).astype(np.float32), SR)
    out = tmp_path / "gen"
    record = _generate(checkpoint, out, "seconds=2", f"reference={ref}",
                       "score_settings.silence_db=-50")
    on_disk = json.loads((out / "generated.json").read_text())
    m = on_disk["metrics"]
    assert on_disk["settings"]["reference"] == f"reference={ref}"
    assert on_disk["settings"]["score_settings"]["silence_db"] == -50
    assert m["audio_ref_seconds"] == 30.0 and m["audio_ref_clip_seconds"] == 2.0
    assert len(m["audio_rms_per_second"]) == 2 and isinstance(m["audio_score"], float)
    # the numbers are score_clip's on the generated part against that reference
    from audiolstm.evaluation.audio_score import build_reference, score_clip

    audio, _ = sf.read(out / "generated.wav", dtype="float32")
    ref_audio, _ = sf.read(ref, dtype="float32")  # as written (16-bit PCM)
    want = score_clip(audio[SR // 2 :], build_reference(ref_audio, SR, 2.0,
                                                        settings=ScoreSettings(silence_db=-50)))
    assert m["audio_score"] == pytest.approx(want.score, rel=1e-9)
    assert m["audio_flags"] == scoring.flag_text(want)
    assert record["metrics"]["audio_fd"] == pytest.approx(want.fd, rel=1e-9)


def test_bad_references_stop_generate_before_anything_is_written(checkpoint: Path,
                                                                 tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(10 * SR, np.float32), SR)
    short = tmp_path / "short.wav"
    sf.write(short, melody(3.0).astype(np.float32), SR)
    cases = [
        ([f"reference={silent}", "seconds=2"], f"reference={silent}: the reference is silent"),
        ([f"reference={short}", "seconds=2"],
         f"reference={short}: the reference (3.00 s, longest piece 3.00 s) is shorter than "
         "two 2 s clips"),
        (["score=true", "seconds=5"],  # the test split of 20 s of data: 2 s
         "reference=null (the checkpoint's test split): the reference (2.00 s"),
        (["score=true", "seconds=0.5"], "seconds=0.5: the audio score needs clips of at least"),
        ([f"reference={short}", "score=false"], f"reference={short} has no effect with score"),
        (["score_settings.dc_threshold=-1"], "score_settings.dc_threshold=-1 must be > 0"),
        # reference_split: the split is the one read, and it is refused where it is unused
        (["score=true", "seconds=5", "reference_split=val"],
         "reference=null (the checkpoint's val split): the reference (2.00 s"),
        ([f"reference={short}", "reference_split=val"],
         f"reference_split=val has no effect: reference={short} is a file"),
        (["score=false", "reference_split=val"],
         "reference_split=val has no effect: score=false"),
        (["reference_split=dev"], "reference_split='dev' is not one of test, val, train"),
    ]
    for overrides, message in cases:
        out = tmp_path / "gen"
        with pytest.raises(UserError) as e:
            _generate(checkpoint, out, *overrides)
        assert str(e.value).startswith(message), str(e.value)
        assert "\n" not in str(e.value)
        assert not (out / "generated.wav").exists() and not (out / "generated.json").exists()


def test_reference_split_scores_against_that_split(checkpoint: Path, tmp_path: Path) -> None:
    """reference_split=train: the score's reference is the training split (16 of the 20
    s), and generated.json says so. Mutant caught: the test split read whatever the
    setting (2 s: too short to score 4 s clips; on VERSION 3 of the built-in data 2 s clips
    of its first 16 s are as far from them as shaped noise, so the clip is 4 s)."""
    record = _generate(checkpoint, tmp_path / "gen", "seconds=4", "reference_split=train")
    assert record["settings"]["reference"] == "reference=null (the checkpoint's train split)"
    assert record["metrics"]["audio_ref_seconds"] == pytest.approx(16.0, abs=0.01)
    assert isinstance(record["metrics"]["audio_score"], float)


def test_auto_says_why_there_is_no_score(checkpoint: Path, tmp_path: Path, capsys) -> None:
    """score=auto with a test split too short for the clip: generated, with the reason."""
    record = _generate(checkpoint, tmp_path / "gen", "seconds=5")
    assert record["metrics"]["audio_score"] is None
    assert "shorter than two 5 s clips" in record["metrics"]["audio_score_skipped"]
    assert "audio score skipped: reference=null" in capsys.readouterr().out


# --------------------------------------------------------------------- sample callback


NOISY_DB = {1: 12.0, 2: 15.0, 3: 8.0, 4: 10.0}  # each epoch's flatness over the reference


@pytest.mark.parametrize("noisy,best", [((), 2), ((2,), 4), ((1, 2, 3, 4), 3)],
                         ids=["clean", "epoch2-noisy", "all-noisy"])
def test_best_audio_checkpoint_holds_the_best_scoring_epoch(tmp_path: Path, monkeypatch,
                                                            noisy: tuple[int, ...],
                                                            best: int) -> None:
    """Scores forced to 0.2, 0.9, 0.5, 0.7 for epochs 1-4, every flag off except
    `noise_like` on the epochs in `noisy` (flatness 12, 15, 8, 10 dB over the reference's):
    best-audio.ckpt must hold the best epoch's weights (it regenerates that epoch's sample
    exactly): epoch 2 when all are clean, epoch 4 when epoch 2 sounds like noise (fewer
    flags first, then the score), epoch 3 when all do (then the least noise-like);
    summary.json and metrics.csv name it beside the best-loss checkpoint. Mutants (each
    tried): saving on every sample (epoch 4), keeping the first (epoch 1), comparing with
    the previous sample's score instead of the best (epoch 4), ranking by the score
    alone (epoch 2 in the noisy cases), ranking equal flags by the score (epoch 2 when
    all are noisy)."""
    forced = iter([0.2, 0.9, 0.5, 0.7])
    epochs = iter(range(1, 5))
    real = scoring.score_metrics
    scores = {}

    def fake(clip, ref, skipped):
        score, numbers = real(clip, ref, skipped)
        epoch = next(epochs)
        flags = dict.fromkeys(score.FLAG_NAMES, False) | {"noise_like": epoch in noisy}
        score = dataclasses.replace(score, score=next(forced), **flags,
                                    flatness_db=score.flatness_ref_db + NOISY_DB[epoch]
                                    if epoch in noisy else score.flatness_ref_db)
        scores[epoch] = score.score
        return score, numbers | score.to_dict() | {"audio_flags": scoring.flag_text(score)}

    monkeypatch.setattr(cb, "score_metrics", fake)
    out = tmp_path / "run"
    sample = "callbacks.sample_generation"
    run(compose_cfg([*TINY, "data.synth_seconds=120", "trainer.max_epochs=4",
                     f"{sample}.seconds=4", f"{sample}.seed_seconds=1",
                     f"{sample}.keep_best_audio=true", f"{sample}.keep_sampled=true"], out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_audio_score"] == scores[best] and summary["best_audio_epoch"] == best
    assert summary["ckpt_best_audio"] == str(out / "checkpoints" / "best-audio.ckpt")
    assert summary["ckpt_best"].startswith(str(out / "checkpoints" / "best-"))
    assert summary["audio_score"] == 0.7  # the last sample's
    for key in ("audio_fd", "audio_flatness_db", "audio_flags"):
        assert key in summary
    sample_json = json.loads((out / f"samples/epoch_{best:03d}.json").read_text())
    assert sample_json["metrics"]["audio_score"] == scores[best]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    logged = [float(r["samples/audio_score"]) for r in rows if r.get("samples/audio_score")]
    assert logged == [0.2, 0.9, 0.5, 0.7]
    assert any(r.get("samples/audio_fd_floor") for r in rows)

    from audiolstm.data.datamodule import AudioDataModule
    from audiolstm.generation.pipeline import continue_audio
    from audiolstm.generation.strategies import Sampling
    from audiolstm.models.checkpoints import model_from_checkpoint

    def regenerates(ckpt: Path, epoch: int) -> None:
        """The checkpoint's weights give exactly that epoch's sample."""
        model = model_from_checkpoint(ckpt)
        model.eval()
        dm = AudioDataModule.from_data_state(model.data_state)
        dm.setup()
        wav, _ = sf.read(out / f"samples/epoch_{epoch:03d}.wav", dtype="float32")
        with torch.no_grad():
            cont = continue_audio(model, model.data_state, wav[:SR], "val", 4.0, sampling=Sampling(
                1.0, 0.0, torch.Generator().manual_seed(epoch)))
        np.testing.assert_allclose(cont.audio, wav, atol=1e-5)

    regenerates(out / "checkpoints" / "best-audio.ckpt", best)
    # keep_sampled: the weights behind every sample, named as the sample, weights only
    sampled = out / "checkpoints" / "sampled"
    assert sorted(p.name for p in sampled.iterdir()) == [f"epoch_{e:03d}.ckpt" for e in (1, 2, 3, 4)]
    if not noisy:  # once is enough: each regenerates its own sample (not the best's)
        for epoch in (1, 3, 4):
            regenerates(sampled / f"epoch_{epoch:03d}.ckpt", epoch)
        assert "optimizer_states" not in torch.load(sampled / "epoch_001.ckpt",
                                                    weights_only=False)
    last = torch.load(out / "checkpoints/last.ckpt", weights_only=False)
    state = next(v for k, v in last["callbacks"].items() if "SampleGeneration" in k)
    assert state == {"best_audio_score": scores[best], "best_audio_epoch": best,
                     "best_audio_flags": int(best in noisy),
                     "best_audio_noise_excess_db": NOISY_DB[best] if best in noisy else 0.0,
                     "best_audio_path": summary["ckpt_best_audio"]}


def test_callback_state_survives_a_resume() -> None:
    a = cb.SampleGeneration(keep_best_audio=True)
    a.best_audio_score, a.best_audio_epoch, a.best_audio_path = 0.7, 4, "x/best-audio.ckpt"
    a.best_audio_flags, a.best_audio_noise_excess_db = 1, 2.5
    b = cb.SampleGeneration(keep_best_audio=True)
    b.load_state_dict(a.state_dict())
    assert (b.best_audio_score, b.best_audio_epoch, b.best_audio_path, b.best_audio_flags,
            b.best_audio_noise_excess_db) == (0.7, 4, "x/best-audio.ckpt", 1, 2.5)


# ------------------------------------------------------------------------------ report


def _run_dir(root: Path, name: str, summary: dict[str, Any]) -> None:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(f"- x={name}\n")
    (d / "summary.json").write_text(json.dumps({"status": "completed"} | summary))


def test_report_ranks_by_audio_score_and_names_both_checkpoints(tmp_path: Path) -> None:
    from audiolstm.analysis.report import main

    _run_dir(tmp_path, "0_a", {"best_val_loss": 0.5, "audio_score": 0.2, "audio_flags": "loop"})
    _run_dir(tmp_path, "1_b", {"best_val_loss": 0.9, "audio_score": 0.8,
                               "best_audio_score": 0.85, "best_audio_epoch": 6,
                               "ckpt_best": "runs/b/checkpoints/best-009.ckpt",
                               "ckpt_best_audio": "runs/b/checkpoints/best-audio.ckpt"})
    _run_dir(tmp_path, "2_c", {"best_val_loss": 0.7})
    (tmp_path / "multirun.yaml").write_text("{}\n")

    assert main([str(tmp_path)]) == 0  # default: val loss
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert [r["run"] for r in rows] == ["0_a", "2_c", "1_b"] and rows[0]["best"] == "1"

    assert main([str(tmp_path), "--sort", "audio_score"]) == 0
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert [r["run"] for r in rows] == ["1_b", "0_a", "2_c"]  # no score: last
    assert rows[0]["best"] == "1" and rows[0]["ckpt_best_audio"].endswith("best-audio.ckpt")
    md = (tmp_path / "report.md").read_text()
    assert "Sorted by audio score (highest first)" in md
    header = next(ln for ln in md.splitlines() if ln.startswith("| #"))
    assert "| audio score |" in header and "| audio flags |" in header
    assert ("best loss `runs/b/checkpoints/best-009.ckpt (val loss 0.9)`; best audio "
            "`runs/b/checkpoints/best-audio.ckpt (epoch 6, audio score 0.85)`") in md
    html = (tmp_path / "report.html").read_text()
    assert "best-audio.ckpt" in html and "sorted by audio score (highest first)" in html

    with pytest.raises(UserError, match=r"^--sort=tick_score is not a summary field"):
        main([str(tmp_path), "--sort", "tick_score"])


def test_schema_has_one_home_for_the_audio_fields() -> None:
    keys = {f.key for f in SUMMARY_FIELDS}
    assert {"audio_score", "best_audio_score", "ckpt_best_audio", "ckpt_best"} <= keys
    assert "audio_score" in SAMPLE_FIELDS and RANKABLE["audio_score"] == "max"
    assert RANKABLE["best_val_loss"] == "min"


@pytest.mark.slow  # two gloo processes: ~1 min on 2 cores
def test_best_audio_checkpoint_under_ddp(tmp_path: Path) -> None:
    """Rank 0 scores; saving is collective, so every rank must take part (a rank that
    skipped it would leave the others waiting at the barrier forever)."""
    from tests.conftest import run_script

    out = tmp_path / "ddp"
    sample = "callbacks.sample_generation"
    res = run_script("train.py", *TINY, "data.synth_seconds=120", "trainer=ddp_cpu",
                     f"{sample}.seconds=4", f"{sample}.seed_seconds=1",
                     f"{sample}.keep_best_audio=true", f"{sample}.keep_sampled=true",
                     f"hydra.run.dir={out}", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ckpt_best_audio"] == str(out / "checkpoints" / "best-audio.ckpt")
    assert (out / "checkpoints" / "best-audio.ckpt").is_file()
    assert summary["best_audio_epoch"] in (1, 2)
    assert len(list((out / "checkpoints" / "sampled").glob("epoch_*.ckpt"))) >= 1
    assert not list((out / "checkpoints").rglob(".*.tmp"))  # no temp file left behind


def test_sample_callback_draws_with_its_top_p(tmp_path: Path, monkeypatch) -> None:
    """`callbacks.sample_generation.top_p` reaches the draws: the callback's Sampling
    carries it (with its temperature and an epoch-seeded generator). Mutant caught: the
    callback building Sampling without top_p (the default 1.0 reaches the model)."""
    seen: list[Any] = []
    real = cb.continue_audio

    def spy(*args, sampling, **kwargs):
        seen.append(sampling)
        return real(*args, sampling=sampling, **kwargs)

    monkeypatch.setattr(cb, "continue_audio", spy)
    sample = "callbacks.sample_generation"
    run(compose_cfg([*TINY, "model.head=logistic_mixture", "trainer.max_epochs=1",
                     f"{sample}.top_p=0.7",
                     f"{sample}.temperature=0.9", f"{sample}.score=false"], tmp_path / "run"))
    assert seen and all(s.top_p == 0.7 and s.temperature == 0.9 for s in seen)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert checkpoints.is_dir() and not (checkpoints / "sampled").exists()  # keep_sampled off
