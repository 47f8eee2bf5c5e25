"""Data exploration: the seed post's multi-scale study of a track (or corpus) as one command.

`python explore.py [data=wav data.path=FILE | data=folder data.path=DIR]` writes to the
run directory:

- with several files (a corpus): `files.png` and a table of every file's duration,
  RMS, peak, silent share and split; the rest of the study then covers the whole;
- `waveforms.png` (grid) and `waveforms/NN_<slug>.png`: the seed post's panels (first
  second ... first 2 minutes, the 2nd/3rd/5th/10th/35th/100th minute, the 5th and 20th
  minute from the end, the last minute); a panel whose range lies beyond the file is
  skipped and listed, not failed. Long panels are min/max-decimated.
- `spectrogram.png`: a representative stretch from the middle of the file.
- `envelope.png` (+ `envelope.npy`): the long-term RMS envelope, split boundaries marked.
- `pulsation.png`, `autocorrelation.png`: the amplitude "pulsation" period, overall and
  per region, from the autocorrelation of the envelope.
- lead-in silence, trailing silence, fade-out length; per-split statistics and what
  each normalisation scheme (fitted on train) maps them to.
- `explore.md`, self-contained `explore.html` (images inlined), `explore.json` (numbers).

One job per module, each importing only those before it here:

| module | job |
|---|---|
| `options` | `ExploreOptions`: the knobs of `conf/explore.yaml`, validated |
| `formatting` | how positions (`clock`) and numbers are written |
| `statistics` | streamed `Moments` per split (one pass each), the RMS envelope, the normalisation table (`data.normalize`'s rules) |
| `periods` | pulsation period, lead-in / end of sound, fade-out |
| `corpus` | a corpus file by file: duration, RMS, peak, silence share, split |
| `panels` | every figure, drawn by `evaluation.plots` |
| `render` | explore.md / explore.html / explore.json |
| `study` | `explore_signal` (the study) and `run` (the command) |

Everything streams over the memory-mapped signal in chunks of `CHUNK` samples, so a
3-hour file costs its map plus a few MB (measured in bench/bench_explore.py). The
analysis functions are pure and tested directly against the built-in drone's `TRUTH`.
"""

from audiolstm.analysis.explore.corpus import FileStats, file_table
from audiolstm.analysis.explore.formatting import clock
from audiolstm.analysis.explore.options import ExploreOptions
from audiolstm.analysis.explore.panels import PANEL_SPECS, Panel, minmax_decimate, select_panels
from audiolstm.analysis.explore.periods import (
    PeriodEstimate,
    autocorrelation,
    estimate_fade,
    first_loud_sample,
    fit_fade,
    last_loud_sample,
    pulsation_period,
    regional_periods,
)
from audiolstm.analysis.explore.render import render_html, render_markdown
from audiolstm.analysis.explore.statistics import (
    CHUNK,
    Moments,
    moments,
    normalization_table,
    rms_envelope,
)
from audiolstm.analysis.explore.study import explore_signal, run
from audiolstm.errors import UserError

__all__ = [
    "CHUNK", "PANEL_SPECS", "ExploreOptions", "FileStats", "Moments", "Panel", "PeriodEstimate",
    "UserError", "autocorrelation", "clock", "estimate_fade", "explore_signal", "file_table",
    "first_loud_sample", "fit_fade", "last_loud_sample", "minmax_decimate", "moments",
    "normalization_table", "pulsation_period", "regional_periods", "render_html",
    "render_markdown", "rms_envelope", "run", "select_panels",
]
