"""Generation controls (issue 22): candidates drawn as one batch and ranked, top_p in
generate.py, their records, and every bad value refused in one line."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiolstm.config import to_container
from audiolstm.data.datamodule import AudioDataModule
from audiolstm.errors import UserError
from audiolstm.generation import pipeline
from audiolstm.generation.candidates import rank_order
from audiolstm.generation.strategies import FrameLikelihood, Sampling, generate_frames
from audiolstm.models.checkpoints import model_from_checkpoint
from audiolstm.models.frame_rnn import AudioRNN
from audiolstm.models.registry import build_model
from tests.conftest import SMOKE, compose_cfg, run_script

SAMPLERNN = ["experiment=samplernn", "model.hidden_sizes=[16]", "model.mlp_hidden=16",
             "model.embed_dim=8", "model.q_levels=64"]
FRAMES = ["model=lstm_300x1", "model.hidden_sizes=[16]", "data.x_len=160"]


def _checkpoint(tmp_path: Path, overrides: list[str], gain: float = 1.0) -> Path:
    """An untrained model with the data state of a smoke run, saved as training would
    (no training: generation only needs weights and the data's settings)."""
    cfg = compose_cfg([*SMOKE, "data.synth_seconds=12", *overrides], tmp_path / "train")
    dm = AudioDataModule(to_container(cfg.data), to_container(cfg.norm),
                         to_container(cfg.repr), seed=cfg.seed)
    dm.prepare_data()
    dm.setup("fit")
    torch.manual_seed(0)
    model = build_model(dm.input_dim, to_container(cfg.model))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(gain)
    model.data_state = dm.data_state()
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    path = tmp_path / "model.ckpt"
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def samplernn_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("srnn"), SAMPLERNN, gain=3.0)


@pytest.fixture(scope="module")
def gaussian_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("gauss"), [*FRAMES, "model.head=gaussian"])


@pytest.fixture(scope="module")
def mse_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("mse"), FRAMES)


def _generate(ckpt: Path, out: Path, *overrides: str) -> dict:
    cfg = compose_cfg([f"ckpt_path={ckpt}", "seconds=0.05", "seed.seconds=0.1",
                       "progress=false", *overrides], out, config_name="generate")
    return pipeline.run(cfg)


def test_candidates_keep_the_most_likely_and_record_the_ranking(samplernn_ckpt: Path,
                                                                tmp_path: Path) -> None:
    """candidates=4 keep=2: generated.wav and generated_2.wav are the two candidates of
    highest mean log-likelihood; each JSON holds the 4-row table, best first, and the
    settings that applied. Each kept file's log-likelihood, recomputed from its audio by
    teacher forcing, is the one recorded. Mutant caught: ranking lowest first (the
    table's values would rise), or keeping the first M drawn."""
    out = tmp_path / "g"
    record = _generate(samplernn_ckpt, out, "candidates=4", "keep=2", "top_p=0.95")
    assert record["settings"]["candidates"] == 4 and record["settings"]["keep"] == 2
    assert record["settings"]["rank"] == "likelihood" and record["settings"]["top_p"] == 0.95
    table = record["candidates"]
    assert [row["rank"] for row in table] == [1, 2, 3, 4]
    values = [row["log_likelihood"] for row in table]
    assert values == sorted(values, reverse=True) and len(set(values)) == 4
    assert [row["wav"] for row in table] == ["generated.wav", "generated_2.wav", None, None]
    assert sorted(row["candidate"] for row in table) == [0, 1, 2, 3]
    assert not (out / "generated_3.wav").exists()
    model = model_from_checkpoint(samplernn_ckpt)
    shift, scale = model.affine("train")
    for stem, row in (("generated", table[0]), ("generated_2", table[1])):
        kept = json.loads((out / f"{stem}.json").read_text())
        assert kept["candidates"] == table and kept["metrics"]["candidate_rank"] == row["rank"]
        audio, _ = sf.read(out / f"{stem}.wav", dtype="float32")
        x = torch.as_tensor((audio.astype(np.float64) - shift) / scale, dtype=torch.float32)
        top = model.lookback
        seed_len = len(audio) - 800
        x = x[seed_len - seed_len // top * top :][None]  # the seed's whole top frames
        with torch.no_grad():
            logits = model.teacher_forced_logits(x)[:, -800:]
        codes = model.quantize(x)[:, -800:]
        own = torch.log_softmax(logits.double(), -1).gather(-1, codes[..., None]).mean()
        assert own.item() == pytest.approx(row["log_likelihood"], abs=1e-4)


def test_one_candidate_writes_what_it_always_wrote(samplernn_ckpt: Path, tmp_path: Path) -> None:
    """candidates=1 (the default): generated.* alone, no table, no control recorded that
    did not apply; top_p=1 recorded nowhere."""
    record = _generate(samplernn_ckpt, tmp_path / "g")
    assert "candidates" not in record and "log_likelihood" not in record["metrics"]
    assert not {"top_p", "candidates", "keep", "rank"} & set(record["settings"])
    assert sorted(p.name for p in (tmp_path / "g").glob("generated*")) == [
        "generated.json", "generated.png", "generated.wav"]


def _stub_scores(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, np.ndarray]]:
    """Stub references named after their split, and a stub score that differs between
    them: against val a clip scores its RMS, and the first two clips scored there carry
    one flag each, the first also a noise excess of 2 dB (as a `noise_like` flag would);
    against any other reference a clip scores minus its RMS, unflagged. Returns every
    (reference, clip) scored."""
    scored: list[tuple[str, np.ndarray]] = []

    def score_metrics(clip, ref, skipped):
        assert skipped is None
        on_val = sum(r == "ref-val" for r, _ in scored) if ref == "ref-val" else -1
        scored.append((ref, np.asarray(clip).copy()))
        rms = float(np.sqrt(np.mean(np.square(clip, dtype=np.float64))))
        value = rms if ref == "ref-val" else -rms
        flags = int(on_val in (0, 1))
        return types.SimpleNamespace(score=value), {
            "audio_score": value, "audio_rms_stub": rms, "audio_flag_count": flags,
            "audio_flags": "x" * flags, "audio_noise_excess_db": 2.0 * (on_val == 0)}

    monkeypatch.setattr(pipeline, "generation_reference",
                        lambda req, path, state, seconds, dm, split:
                        (f"ref-{split}", None, f"stub {split}"))
    monkeypatch.setattr(pipeline, "score_metrics", score_metrics)
    monkeypatch.setattr(pipeline, "summary_line", lambda score: "stub score")
    return scored


def test_rank_by_score_ranks_against_val_and_reports_test(gaussian_ckpt: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """rank=score on a frame model (head=gaussian, 4 streams through the frame strategies):
    every candidate is scored against the reported reference (the test split) and, to rank
    it, against `rank_reference_split` (val by default), and ranked by fewer flags, then
    the lower noise excess, then that score (stubs: against val the loudest ranks first;
    the first two drawn carry a flag each, so they rank last, and of them the first also
    a noise excess, so it ranks behind the second though louder; against test the order
    would be the reverse). Mutants caught: ranking by the reported (test) score, ranking
    lowest first, keeping the first drawn, ranking by the score alone (flags ignored),
    ranking equally flagged clips by the score (noise excess ignored)."""
    scored = _stub_scores(monkeypatch)
    out = tmp_path / "g"
    record = _generate(gaussian_ckpt, out, "candidates=4", "keep=1", "rank=score",
                       "strategy=refeed")
    test_clips = [c for r, c in scored if r == "ref-test"]
    val_clips = [c for r, c in scored if r == "ref-val"]
    assert len(test_clips) == len(val_clips) == 4 and len(scored) == 8
    rms = [float(np.sqrt(np.mean(np.square(c, dtype=np.float64)))) for c in val_clips]
    assert len(set(rms)) == 4
    assert rms[0] > rms[1]  # so ranking the two flagged draws by the score alone would differ
    order = [*sorted(range(2, 4), key=lambda i: -rms[i]), 1, 0]  # flagged last, noisier last
    assert [row["candidate"] for row in record["candidates"]] == order
    assert [row["rank_audio_score"] for row in record["candidates"]] == [rms[i] for i in order]
    assert [row["audio_score"] for row in record["candidates"]] == [-rms[i] for i in order]
    assert record["metrics"]["audio_score"] == -rms[order[0]]  # reported against test
    assert record["settings"]["rank_reference"] == "stub val"
    audio, _ = sf.read(out / "generated.wav", dtype="float32")
    np.testing.assert_array_equal(audio[-800:], val_clips[order[0]])


def test_rank_reference_null_ranks_against_the_reported_reference(
        gaussian_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rank_reference_split=null: each candidate is scored once, against the reported
    reference, and ranked by that score (the loudest-negative, i.e. quietest, first)."""
    scored = _stub_scores(monkeypatch)
    record = _generate(gaussian_ckpt, tmp_path / "g", "candidates=3", "rank=score",
                       "rank_reference_split=null", "strategy=refeed")
    assert [r for r, _ in scored] == ["ref-test"] * 3
    values = [row["audio_score"] for row in record["candidates"]]
    assert values == sorted(values, reverse=True)
    assert values == [row["rank_audio_score"] for row in record["candidates"]]
    assert record["settings"]["rank_reference"] == "stub test"


@pytest.mark.parametrize("strategy", ["stateful", "refeed"])
@pytest.mark.parametrize("head", ["gaussian", "logistic_mixture"])
def test_frame_likelihood_is_the_own_distribution_of_the_drawn_frames(strategy: str,
                                                                     head: str) -> None:
    """Three streams at temperature 0.5: each stream's recorded mean log-probability is
    that of its frames under the head's own distribution (T = 1), recomputed by one
    teacher-forced pass over seed + generated frames; streams are drawn independently.
    Mutant caught (tried): scoring under the tempered distribution."""
    torch.manual_seed(0)
    model = AudioRNN(input_dim=6, hidden_sizes=[10], head=head).eval()
    seed = torch.randn(3, 4, 6)
    meter = FrameLikelihood(model)
    frames = generate_frames(model, seed, 5, strategy, sampling=Sampling(
        0.5, 0.0, torch.Generator().manual_seed(1)), likelihood=meter)
    assert frames.shape == (3, 5, 6) and not torch.allclose(frames[0], frames[1])
    with torch.no_grad():
        out, _ = model(torch.cat([seed, frames], dim=1))
    params = out[:, 3:-1]  # the outputs that predicted frames 0..4
    if head == "gaussian":
        logp = -model.head.nll(params, frames, reduction="none")
    else:
        logp = model.head.log_prob(params, frames)
    torch.testing.assert_close(meter.mean(), logp.double().mean((1, 2)), rtol=0, atol=1e-4)


def test_rank_order_is_highest_first_stable_nan_last() -> None:
    assert rank_order([0.5, 2.0, float("nan"), 2.0, -1.0]) == [1, 3, 0, 4, 2]
    # fewer flags first, whatever the values (AudioScore.rank_key)
    assert rank_order([0.5, 2.0, float("nan"), 2.0, -1.0],
                      [(0,), (1,), (0,), (2,), (0,)]) == [0, 4, 2, 1, 3]
    # then the lower noise excess, whatever the values
    assert rank_order([0.5, 2.0, 1.0, 3.0], [(1, 0.0), (1, 4.0), (0, 0.0), (1, 1.5)]) == [
        2, 0, 3, 1]


@pytest.mark.parametrize(("ckpt", "overrides", "message"), [
    ("samplernn", ["top_p=0"], "top_p=0"),
    ("samplernn", ["top_p=1.5"], "top_p=1.5 must be in (0, 1]"),
    ("samplernn", ["candidates=2", "keep=3"], "keep=3 must be <= candidates=2"),
    ("samplernn", ["candidates=0"], "candidates=0 must be a positive integer"),
    ("samplernn", ["rank=best", "candidates=2"], "rank='best' is not one of"),
    ("samplernn", ["rank=score"], "rank=score ranks candidates"),
    ("samplernn", ["top_p=0.9", "temperature=0"], "top_p=0.9 does nothing at temperature=0"),
    ("samplernn", ["candidates=2", "temperature=0"], "candidates=2 would be 2 identical"),
    ("mse", ["top_p=0.9"], "top_p=0.9 needs a discrete head"),
    ("gaussian", ["top_p=0.9"], "model.head=gaussian"),
    ("mse", ["candidates=2"], "candidates=2 would be 2 identical"),
    ("mse", ["candidates=2", "feedback_noise=0.1"], "rank=likelihood needs a model with a"),
    ("samplernn", ["candidates=2", "rank=score", "score=false"], "rank=score needs the audio score"),
    ("samplernn", ["candidates=2", "rank=score", "rank_reference_split=dev"],
     "rank_reference_split='dev' is not one of"),
    ("samplernn", ["candidates=2", "rank_reference_split=test"],
     "rank_reference_split=test has no effect"),
    ("samplernn", ["rank_reference_split=null"], "rank_reference_split=null has no effect"),
])
def test_bad_controls_are_one_line_naming_the_field(request, tmp_path: Path, monkeypatch,
                                                    ckpt: str, overrides: list[str],
                                                    message: str) -> None:
    """Each refused before anything is generated or written."""
    path = request.getfixturevalue(f"{ckpt}_ckpt")
    with pytest.raises(UserError, match=None) as err:
        _generate(path, tmp_path / "g", *overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "g").exists() or not any((tmp_path / "g").iterdir())


def test_generate_cli_refuses_top_p_out_of_range(samplernn_ckpt: Path, tmp_path: Path) -> None:
    """The entry point: exit 2, one line on stderr naming the field, no files."""
    res = run_script("generate.py", f"ckpt_path={samplernn_ckpt}", "top_p=1.5",
                     f"hydra.run.dir={tmp_path / 'g'}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "top_p=1.5" in lines[0], res.stderr
    assert not (tmp_path / "g/generated.wav").exists()
