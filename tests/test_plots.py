"""Every figure writes a real PNG, atomically, without touching pyplot."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from audiolstm.evaluation import plots as P

SR = 16_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _check_png(path: Path, min_w: int = 300, min_h: int = 200) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 1000
    w, h = _png_size(path)
    assert min_w <= w <= 4000 and min_h <= h <= 4000, (w, h)
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    return w, h


def _audio(n: int, seed: int = 0) -> np.ndarray:
    t = np.arange(n) / SR
    noise = np.random.default_rng(seed).standard_normal(n)
    return (0.5 * np.sin(2 * np.pi * 220 * t) + 0.1 * noise).astype(np.float32)


def test_plot_generation(tmp_path: Path) -> None:
    x = _audio(SR * 3)
    out = P.plot_generation(tmp_path / "deep" / "dir" / "gen.png", x, SR, SR, title="t")
    assert out == tmp_path / "deep" / "dir" / "gen.png"
    w, h = _check_png(out)
    assert (w, h) == pytest.approx((10 * P.DPI, 6 * P.DPI), abs=2)
    assert sorted(p.name for p in out.parent.iterdir()) == ["gen.png"]


def test_plot_generation_long_audio_and_nonfinite(tmp_path: Path) -> None:
    x = _audio(1_200_000)  # > 1e6 samples: envelope + capped spectrogram frames
    x[500_000:500_100] = np.nan
    x[700_000] = np.inf
    _check_png(P.plot_generation(tmp_path / "long.png", x, SR, 400_000))
    # seed_len at the extremes: all generated, all seed
    _check_png(P.plot_generation(tmp_path / "all_gen.png", x[:5000], SR, 0))
    _check_png(P.plot_generation(tmp_path / "all_seed.png", x[:5000], SR, 10**9))


def test_plot_generation_overwrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "g.png"
    path.write_bytes(b"old")
    P.plot_generation(path, _audio(4000), SR, 2000)
    _check_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png"]


def test_failed_save_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        P.plot_waveform(tmp_path / "w.png", np.zeros(0), SR)
    with pytest.raises(ValueError):
        P.plot_waveform(tmp_path / "w.png", np.zeros((2, 10)), SR)
    assert list(tmp_path.iterdir()) == []


def test_crash_while_writing_keeps_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.png"
    path.write_bytes(b"previous")

    def broken_savefig(self, fh, **kwargs) -> None:
        fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(P.Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        P.plot_spectrogram(path, _audio(4000), SR, "x")
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["s.png"]


def test_plot_learning_curves_single_and_many(tmp_path: Path) -> None:
    epochs = list(range(1, 21))
    one = {
        "run": {
            "train/loss": (epochs, [1.0 / e for e in epochs]),
            "val/loss": (epochs, [1.2 / e + 0.01 for e in epochs]),
        }
    }
    _check_png(P.plot_learning_curves(tmp_path / "one.png", one, title="300x3"))
    many = {
        f"lstm_{i}": {
            "train/loss": (epochs, list(np.linspace(2, 0.5, 20) + i)),
            "val/loss": (epochs, list(np.linspace(2.5, 0.8, 20) + i)),
        }
        for i in range(6)
    }
    w_many, _ = _check_png(P.plot_learning_curves(tmp_path / "many.png", many))
    w_one, _ = _png_size(tmp_path / "one.png")
    assert w_many > w_one  # legend outside widens the figure
    _check_png(P.plot_learning_curves(tmp_path / "empty.png", {}))
    with pytest.raises(ValueError):
        P.plot_learning_curves(tmp_path / "bad.png", {"r": {"val/loss": ([1, 2], [1.0])}})


def test_plot_waveform_grid_and_single(tmp_path: Path) -> None:
    panels = [(f"minute {i}", _audio(SR // 2, seed=i), 60.0 * i) for i in range(5)]
    w, h = _check_png(P.plot_waveform_grid(tmp_path / "grid.png", panels, SR, ncols=3))
    assert w > h  # 3 columns x 2 rows
    _check_png(P.plot_waveform_grid(tmp_path / "grid1.png", panels[:1], SR))
    _check_png(P.plot_waveform(tmp_path / "w.png", _audio(SR), SR, 12.5, "excerpt"))
    _check_png(P.plot_waveform(tmp_path / "w_long.png", _audio(1_100_000), SR, 0.0, "long"))
    with pytest.raises(ValueError):
        P.plot_waveform_grid(tmp_path / "none.png", [], SR)


def test_plot_envelope(tmp_path: Path) -> None:
    env = 0.3 + 0.2 * np.sin(np.arange(10_800) / 50.0)  # 3 h at 1 value/s -> minutes axis
    bounds = {"train|val": 0.8 * 10_800, "val|test": 0.9 * 10_800}
    _check_png(P.plot_envelope(tmp_path / "env.png", env, 1.0, bounds, "track"))
    _check_png(P.plot_envelope(tmp_path / "env_short.png", env[:100], 10.0, None, "short"))


def test_plot_series_and_spectrogram(tmp_path: Path) -> None:
    _check_png(
        P.plot_series(
            tmp_path / "s.png",
            np.arange(180),
            np.random.rand(180),
            "minute",
            "period (s)",
            "pulsation period",
        )
    )
    _check_png(P.plot_spectrogram(tmp_path / "spec.png", _audio(SR * 2), SR, "spec"))
    _check_png(P.plot_spectrogram(tmp_path / "spec_long.png", _audio(1_500_000), SR, "long"))
    _check_png(P.plot_spectrogram(tmp_path / "spec_tiny.png", _audio(100), SR, "tiny"))
    with pytest.raises(ValueError):
        P.plot_series(tmp_path / "bad.png", [1, 2], [1], "x", "y", "t")


def test_no_pyplot_state() -> None:
    """Plotting must not import pyplot (global state, GUI backends in headless jobs)."""
    assert "matplotlib.pyplot" not in sys.modules or _pyplot_from_elsewhere()


def _pyplot_from_elsewhere() -> bool:
    # Another test module may legitimately import pyplot; then at least no figure is open.
    import matplotlib.pyplot as plt

    return plt.get_fignums() == []
