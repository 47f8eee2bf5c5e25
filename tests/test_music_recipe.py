"""bench/music_recipe.py: the four targets per seed, and several checkpoints ranked on the
same seeds (generate.py stubbed: each checkpoint's seeds get fixed metrics)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT))
from bench import music_recipe  # noqa: E402


def metrics(score: float, flat: float, rms: tuple[float, float], flags: str = "",
            excess: float = 0.0) -> dict:
    return {"audio_rms_per_second": list(rms), "audio_silent_seconds": 0,
            "audio_flatness_db": flat, "audio_flatness_ref_db": -27.0, "audio_score": score,
            "audio_flags": flags, "audio_flag_count": len([f for f in flags.split(",") if f]),
            "audio_noise_excess_db": excess, "audio_dc_offset": 0.0}


OK = metrics(0.8, -25.0, (0.5, 1.5))
TOO_QUIET = metrics(0.9, -25.0, (0.2, 1.0), "loudness_off")
NOISE = metrics(1.2, -9.0, (0.5, 1.5), "noise_like", 18.0)
DULL_NOISE = metrics(1.0, -19.0, (0.5, 1.5), "noise_like", 8.0)
SEEDS = {"a": [NOISE, NOISE, OK, NOISE],            # 1 met
         "b": [OK, TOO_QUIET, OK, OK],               # 3 met: chosen
         "c": [DULL_NOISE, OK, DULL_NOISE, DULL_NOISE],  # 1 met, less noisy than a
         "d": [NOISE, OK, TOO_QUIET, NOISE]}         # 1 met, flags as a and c, noise between


def test_row_checks_the_four_targets() -> None:
    assert music_recipe.row(0, OK)[1]
    assert not music_recipe.row(0, TOO_QUIET)[1]  # a second at 0.2 x
    assert not music_recipe.row(0, NOISE)[1]  # 18 dB flatter than the reference
    assert not music_recipe.row(0, metrics(0.4, -25.0, (0.5, 1.5)))[1]  # score < 0.5
    assert not music_recipe.row(0, OK | {"audio_silent_seconds": 1})[1]


def test_several_checkpoints_are_ranked_on_the_same_seeds(tmp_path: Path, capsys,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Most seeds meeting all four first, then fewer flags per seed, then less noise
    excess, then the median score. Mutants caught: ranking by the median score (a wins),
    by met and flags alone (a, c, d tie and keep their order), checkpoints judged on
    other seeds or split (the calls are checked)."""
    calls = []

    def generate(ckpt, out, split, seed, args):
        calls.append((ckpt.name, split, seed))
        return {"metrics": SEEDS[ckpt.stem][seed]}

    monkeypatch.setattr(music_recipe, "generate", generate)
    ckpts = []
    for name in SEEDS:
        (tmp_path / f"{name}.ckpt").write_bytes(b"")
        ckpts.append(str(tmp_path / f"{name}.ckpt"))
    monkeypatch.setattr(sys, "argv", ["music_recipe.py", *ckpts, "--split", "val",
                                      "--out", str(tmp_path / "out")])
    music_recipe.main()
    assert calls == [(f"{n}.ckpt", "val", s) for n in SEEDS for s in range(4)]
    text = capsys.readouterr().out
    ranking = [ln.split("`")[1] for ln in text.splitlines() if ln.startswith("| `")]
    # b: 3 met; a, c, d: 1 met, 0.75 flags per seed, noise excess 13.5, 6 and 9 dB
    assert ranking == ["b.ckpt", "c.ckpt", "d.ckpt", "a.ckpt"]
    assert f"chosen on val: `{tmp_path / 'b.ckpt'}`" in text


def test_a_missing_checkpoint_is_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["music_recipe.py", str(tmp_path / "none.ckpt")])
    with pytest.raises(SystemExit, match="none.ckpt: no such checkpoint"):
        music_recipe.main()
