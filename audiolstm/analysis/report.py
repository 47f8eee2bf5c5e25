"""`python report.py DIR [DIR ...] [--out OUT] [--title TITLE] [--sort KEY]`: compare runs.

DIR is a multirun directory (its sub-directories are runs) or a run directory. The report
is built only from what runs leave on disk (summary.json, .hydra/overrides.yaml,
metrics.csv, samples/), so it works on a sweep that is still running, was killed, or ran
on a cluster: a run without summary.json shows as "incomplete", failed and pruned runs
show their reason. Written into DIR (or OUT):

- report.csv   one line per run, every number at full precision (for pandas/spreadsheets)
- report.md    the table sorted by best validation loss, or by any summary field with a
               direction (`--sort audio_score`: how the last samples sound), the best
               completed run marked, failure reasons, the learning curves, links to the
               samples and, where runs kept one, their best-loss and best-audio checkpoints
- report.html  the same, self-contained (inline CSS, images and audio as data URIs) so it
               can be mailed or attached to a W&B report: one <audio> player per run
- learning_curves.png  train (dashed) and val (solid) loss of every run, overlaid
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiolstm.atomic import write_text
from audiolstm.errors import UserError
from audiolstm.evaluation.plots import plot_learning_curves
from audiolstm.runinfo import RANKABLE, SUMMARY_FIELDS, epoch_curves, read_json

#: Media larger than this are linked (relative path) instead of embedded in report.html.
MAX_EMBED_BYTES = 8 * 1024 * 1024
#: Override keys that are bookkeeping, not hyper-parameters.
HIDDEN_KEYS = ("optuna", "hydra.sweep.dir", "hydra.run.dir")

#: CSV: the run's identity, every summary field (runinfo.SUMMARY_FIELDS), its files.
CSV_FIELDS = ("rank", "best", "run", "status", "reason", "overrides", "varying",
              *(f.key for f in SUMMARY_FIELDS), "sample_wav", "run_dir")


@dataclass
class Run:
    """What one run directory tells us; missing numbers stay None."""

    path: Path
    name: str
    num: int
    status: str
    reason: str = ""
    overrides: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    sample_wav: Path | None = None
    sample_png: Path | None = None
    label: str = ""
    varying: str = ""
    best: bool = False
    rank: int = 0

    def get(self, key: str) -> float | None:
        v = self.summary.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    @property
    def val_loss(self) -> float | None:
        v = self.get("best_val_loss")
        if v is None and "val/loss" in self.curves:  # killed or pruned: best epoch so far
            vals = [x for x in self.curves["val/loss"][1] if math.isfinite(x)]
            v = min(vals) if vals else None
        return v if v is not None and math.isfinite(v) else None


# ------------------------------------------------------------------------------ discovery


def _is_run(d: Path) -> bool:
    return ((d / "summary.json").is_file() or (d / ".hydra" / "overrides.yaml").is_file()
            or (d / "metrics.csv").is_file()) and not (d / "multirun.yaml").is_file()


def find_runs(dirs: Sequence[Path]) -> list[Path]:
    """Run directories: each DIR itself if it is one, else its sub-directories that are."""
    runs: list[Path] = []
    for d in dirs:
        if not d.exists():
            raise UserError(f"{d}: no such directory")
        if not d.is_dir():
            raise UserError(f"{d}: not a directory (give a multirun or run directory)")
        if _is_run(d):
            runs.append(d)
            continue
        runs.extend(sorted((s for s in d.iterdir()
                            if s.is_dir() and not s.name.startswith(".") and _is_run(s)),
                           key=_job_num))
    return runs


def _job_num(d: Path) -> tuple[int, str]:
    head = d.name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, d.name)


def _read_overrides(d: Path, summary: dict[str, Any]) -> list[str]:
    """The run's task overrides (a list, so values with commas such as [300,300] survive)."""
    path = d / ".hydra" / "overrides.yaml"
    if path.is_file():
        from omegaconf import OmegaConf

        items = OmegaConf.to_container(OmegaConf.load(path))
        if isinstance(items, list):
            return [str(o) for o in items]
    label = summary.get("overrides")
    return [] if not label or label == "default" else [label]


def _newest_sample(d: Path, summary: dict[str, Any]) -> Path | None:
    wav = summary.get("sample_wav")
    if wav:
        for cand in (Path(wav), d / "samples" / Path(wav).name):  # moved run dirs too
            if cand.is_file():
                return cand
    wavs = sorted((d / "samples").glob("epoch_*.wav"))
    return wavs[-1] if wavs else None


def load_run(d: Path) -> Run:
    summary: dict[str, Any] = {}
    status, reason = "incomplete", "no summary.json (killed, still running or crashed hard)"
    if (d / "summary.json").is_file():
        try:
            summary = read_json(d / "summary.json")
            status = str(summary.get("status") or "completed")
            reason = str(summary.get("error") or "")
        except (OSError, ValueError) as e:
            reason = f"unreadable summary.json: {e}"
    wav = _newest_sample(d, summary)
    png = wav.with_suffix(".png") if wav is not None else None
    return Run(path=d, name=d.name, num=_job_num(d)[0], status=status, reason=reason,
               overrides=[o for o in _read_overrides(d, summary)
                          if o.split("=", 1)[0].lstrip("+~") not in HIDDEN_KEYS],
               summary=summary, curves=epoch_curves(d / "metrics.csv"), sample_wav=wav,
               sample_png=png if png is not None and png.is_file() else None)


def _label_runs(runs: list[Run], several_dirs: bool) -> list[str]:
    """Give each run its varying overrides as label; return the overrides all runs share."""
    split = [dict(o.split("=", 1) if "=" in o else (o, "") for o in r.overrides) for r in runs]
    keys = list(dict.fromkeys(k for s in split for k in s))
    common = [k for k in keys if len({s.get(k) for s in split}) == 1]
    for r, s in zip(runs, split, strict=True):
        varying = [f"{k}={v}" if v else k for k, v in s.items() if k not in common]
        r.varying = ",".join(varying)
        r.label = r.varying or r.name
        if several_dirs:
            r.label = f"{r.path.parent.name}/{r.label}"
    return [f"{k}={split[0][k]}" if split[0][k] else k for k in common] if runs else []


#: the default ranking
DEFAULT_SORT = "best_val_loss"


def sort_value(r: Run, key: str) -> float | None:
    """The number a run is ranked by (best val loss falls back on metrics.csv)."""
    v = r.val_loss if key == "best_val_loss" else r.get(key)
    return v if v is not None and math.isfinite(v) else None


def check_sort(sort: str) -> None:
    if sort not in RANKABLE:
        raise UserError(f"--sort={sort} is not a summary field the report can rank by "
                        f"(one of: {', '.join(RANKABLE)})")


def rank_runs(runs: list[Run], sort: str = DEFAULT_SORT) -> list[Run]:
    """Sort by `sort` (a summary field with a direction; runs without a value last) and
    mark the best completed run."""
    check_sort(sort)
    sign = 1.0 if RANKABLE[sort] == "min" else -1.0
    order = {"completed": 0, "pruned": 1, "incomplete": 2, "failed": 3}

    def key(r: Run) -> tuple:
        v = sort_value(r, sort)
        return (v is None, sign * v if v is not None else 0.0, order.get(r.status, 4), r.num)

    runs = sorted(runs, key=key)
    for i, r in enumerate(runs, 1):
        r.rank = i
    done = [r for r in runs if r.status == "completed" and sort_value(r, sort) is not None]
    if done:
        done[0].best = True
    return runs


def _sorted_by(sort: str) -> str:
    header = next((f.header for f in SUMMARY_FIELDS if f.key == sort), None) or sort
    return f"{header} ({'lowest' if RANKABLE[sort] == 'min' else 'highest'} first)"


def _checkpoints(runs: list[Run]) -> list[tuple[Run, str, str]]:
    """(run, best-loss checkpoint, best-audio checkpoint) of the runs that kept a best-audio
    one (callbacks.sample_generation.keep_best_audio=true)."""
    out = []
    for r in runs:
        audio = r.summary.get("ckpt_best_audio")
        if audio:
            loss = r.summary.get("ckpt_best") or ""
            score, epoch = r.get("best_audio_score"), r.get("best_audio_epoch")
            what = f"epoch {int(epoch)}, audio score {_num(score, 3)}" if epoch else ""
            out.append((r, f"{loss} (val loss {_num(r.val_loss)})", f"{audio} ({what})"))
    return out


# ------------------------------------------------------------------------------- formats


def _num(v: float | None, digits: int = 4) -> str:
    if v is None or not math.isfinite(v):
        return ""
    return f"{v:.{digits}g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def _params(v: float | None) -> str:
    return "" if v is None else f"{int(v):,}"


def _format(fmt: str, v: float | str | None) -> str:
    if fmt == "text":
        return "" if v is None else str(v)
    if fmt == "params":
        return _params(v)
    if fmt == "duration":
        return _duration(v)
    if fmt == "int":
        return "" if v is None else str(int(v))
    if fmt in ("splits", "split_durations"):  # {train, val, test}
        if not isinstance(v, dict):
            return ""
        one = _duration if fmt == "split_durations" else (lambda x: "" if x is None else str(x))
        return " / ".join(one(v.get(s)) for s in ("train", "val", "test"))
    return _num(v)


#: (header, key): the run's identity, then every summary field with a header.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("#", "rank"), ("run (overrides that vary)", "label"), ("status", "status"),
    *((f.header, f.key) for f in SUMMARY_FIELDS if f.header),
)
_ALWAYS = ("rank", "label", "status", *(f.key for f in SUMMARY_FIELDS if f.always))
_FORMAT = {f.key: f.fmt for f in SUMMARY_FIELDS}


def columns(runs: list[Run]) -> list[tuple[str, str]]:
    """COLUMNS minus the optional metric columns no run has (e.g. ridge for SampleRNN)."""
    return [(h, k) for h, k in COLUMNS
            if k in _ALWAYS or any(r.summary.get(k) is not None for r in runs)]


def _cells(r: Run, cols: list[tuple[str, str]] | None = None) -> list[str]:
    out = []
    for _, key in cols or COLUMNS:
        if key == "rank":
            out.append(f"{r.rank} ★" if r.best else str(r.rank))
        elif key == "label":
            out.append(r.label)
        elif key == "status":
            out.append(r.status)
        elif key == "best_val_loss":
            out.append(_num(r.val_loss))
        else:
            fmt = _FORMAT.get(key, "num")
            raw = fmt in ("text", "splits", "split_durations")
            out.append(_format(fmt, r.summary.get(key) if raw else r.get(key)))
    return out


def write_csv(path: Path, runs: list[Run]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    for r in runs:
        row: dict[str, Any] = {f.key: r.summary.get(f.key) for f in SUMMARY_FIELDS}
        row |= {"rank": r.rank, "best": int(r.best), "run": r.name, "status": r.status,
                "reason": r.reason, "overrides": " ".join(r.overrides),
                "varying": r.varying, "best_val_loss": r.val_loss,
                "sample_wav": str(r.sample_wav or ""), "run_dir": str(r.path)}
        w.writerow({k: "" if v is None else v for k, v in row.items()})
    write_text(path, buf.getvalue())


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def markdown_table(runs: list[Run]) -> str:
    cols = columns(runs)
    lines = ["| " + " | ".join(h for h, _ in cols) + " |",
             "|" + "|".join("---:" if k not in ("label", "status") else "---"
                            for _, k in cols) + "|"]
    for r in runs:
        cells = [_md_escape(c) for c in _cells(r, cols)]
        if r.best:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rel(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path, start)
    except ValueError:  # another drive (Windows)
        return str(path)


def write_markdown(path: Path, title: str, runs: list[Run], common: list[str],
                   curves_png: Path | None, sort: str = DEFAULT_SORT) -> None:
    out = path.parent
    n = {s: sum(r.status == s for r in runs) for s in ("completed", "pruned", "failed",
                                                      "incomplete")}
    parts = [f"# {title}", "",
             f"{len(runs)} runs: " + ", ".join(f"{v} {k}" for k, v in n.items() if v) + ". "
             f"Sorted by {_sorted_by(sort)}; ★ marks the best completed run. "
             "*test / zero* and *test / persistence* are the test MSE divided by the MSE of "
             "predicting zeros and of repeating the last frame (below 1 = better than that "
             "baseline); *tick score* ≈ 1 means no clicks at frame boundaries; *RMS ratio* "
             "is the loudness of the generated audio relative to its seed; *audio score* "
             "compares the last sample with the validation audio (1 = as real as it, "
             "0 = as good as noise shaped like it).", ""]
    if common:
        parts += ["Shared by every run: `" + " ".join(common) + "`", ""]
    parts += [markdown_table(runs), ""]
    problems = [r for r in runs if r.status != "completed" and r.reason]
    if problems:
        parts += ["## Runs that did not complete", ""]
        parts += [f"- #{r.rank} `{r.label}` **{r.status}**: {_md_escape(r.reason)}"
                  for r in problems]
        parts.append("")
    kept = _checkpoints(runs)
    if kept:
        parts += ["## Checkpoints: best loss and best audio", ""]
        parts += [f"- #{r.rank} `{r.label}`: best loss `{_md_escape(loss)}`; best audio "
                  f"`{_md_escape(audio)}`" for r, loss, audio in kept]
        parts.append("")
    if curves_png is not None:
        parts += ["## Learning curves", "",
                  f"![learning curves]({_rel(curves_png, out)})",
                  "", "Train loss dashed, validation loss solid, one colour per run.", ""]
    samples = [r for r in runs if r.sample_wav is not None]
    if samples:
        parts += ["## Last generated sample of each run", ""]
        for r in samples:
            assert r.sample_wav is not None
            line = f"- #{r.rank} `{r.label}`: [{r.sample_wav.name}](<{_rel(r.sample_wav, out)}>)"
            if r.sample_png is not None:
                line += f" ([plot](<{_rel(r.sample_png, out)}>))"
            parts.append(line)
        parts.append("")
    write_text(path, "\n".join(parts))


def _data_uri(path: Path, mime: str, out: Path) -> str:
    """Embed small media; link big ones (relative to the report) so the HTML stays small."""
    if path.stat().st_size > MAX_EMBED_BYTES:
        return html.escape(_rel(path, out))
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#222;line-height:1.4}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;width:100%}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:right;vertical-align:top}
th{background:#f4f4f4;position:sticky;top:0}
td.label,td.status{text-align:left}td.label{font-family:ui-monospace,monospace;
word-break:break-all}
tr.best{background:#e8f6e8;font-weight:600}
tr.failed td.status,tr.incomplete td.status{color:#b00020}tr.pruned td.status{color:#a66b00}
.note{color:#555;font-size:.9rem}code{background:#f4f4f4;padding:0 .2rem}
.run{margin:1rem 0;padding:.5rem 1rem;border:1px solid #ddd;border-radius:6px}
.run img{max-width:100%}.run audio{width:100%;max-width:600px;display:block;margin:.5rem 0}
img.curves{max-width:100%}
"""

# Media that fail to decode are reported on the console and counted on <body>
# (data-images-ok, data-audio-ok), so a broken report is noticed - also by the test that
# opens it in a headless browser.
SCRIPT = """
function reportMedia() {
  var imgs = document.images, auds = document.querySelectorAll('audio'), bad = 0, i;
  for (i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) {
      bad++; console.error('report: image failed to load: ' + imgs[i].alt);
    }
  }
  document.body.setAttribute('data-images-ok', String(imgs.length - bad));
  bad = 0;
  for (i = 0; i < auds.length; i++) {
    if (auds[i].error || auds[i].networkState === HTMLMediaElement.NETWORK_NO_SOURCE) {
      bad++; console.error('report: audio failed to load: ' + auds[i].title);
    }
  }
  document.body.setAttribute('data-audio-ok', String(auds.length - bad));
}
window.addEventListener('load', function () { setTimeout(reportMedia, 500); });
"""


def write_html(path: Path, title: str, runs: list[Run], common: list[str],
               curves_png: Path | None, sort: str = DEFAULT_SORT) -> None:
    out = path.parent
    esc = html.escape
    rows = []
    cols = columns(runs)
    for r in runs:
        cls = " ".join(c for c in (r.status, "best" if r.best else "") if c)
        tds = []
        for (_, key), cell in zip(cols, _cells(r, cols), strict=True):
            klass = f' class="{key}"' if key in ("label", "status") else ""
            text = esc(cell)
            if key == "status" and r.reason:
                text += f'<br><span class="note">{esc(r.reason)}</span>'
            tds.append(f"<td{klass}>{text}</td>")
        rows.append(f'<tr class="{cls}">' + "".join(tds) + "</tr>")
    head = "".join(f"<th>{esc(h)}</th>" for h, _ in cols)
    body = [f"<h1>{esc(title)}</h1>",
            f'<p class="note">{len(runs)} runs, sorted by {esc(_sorted_by(sort))}; ★ marks '
            "the best completed run. <i>test / zero</i> and <i>test / persistence</i>: test "
            "MSE divided by the MSE of predicting zeros and of repeating the last frame "
            "(below 1 beats that baseline). <i>tick score</i> ≈ 1: no clicks at frame "
            "boundaries. <i>RMS ratio</i>: loudness of the generated audio relative to its "
            "seed. <i>audio score</i>: the last sample against the validation audio (1 = as "
            "real as it, 0 = as good as noise shaped like it).</p>"]
    if common:
        body.append(f'<p class="note">Shared by every run: <code>{esc(" ".join(common))}'
                    "</code></p>")
    body.append(f'<table id="runs"><thead><tr>{head}</tr></thead><tbody>'
                + "".join(rows) + "</tbody></table>")
    kept = _checkpoints(runs)
    if kept:
        body.append("<h2>Checkpoints: best loss and best audio</h2><ul>")
        body += [f"<li>#{r.rank} <code>{esc(r.label)}</code>: best loss <code>{esc(loss)}"
                 f"</code>; best audio <code>{esc(audio)}</code></li>" for r, loss, audio in kept]
        body.append("</ul>")
    if curves_png is not None:
        body += ["<h2>Learning curves</h2>",
                 f'<img class="curves" alt="learning curves" '
                 f'src="{_data_uri(curves_png, "image/png", out)}">',
                 '<p class="note">Train loss dashed, validation loss solid.</p>']
    samples = [r for r in runs if r.sample_wav is not None]
    if samples:
        body.append("<h2>Last generated sample of each run</h2>")
        for r in samples:
            assert r.sample_wav is not None
            block = [f'<div class="run"><b>#{r.rank}</b> <code>{esc(r.label)}</code> '
                     f"({esc(r.status)}, {esc(r.sample_wav.name)})",
                     f'<audio controls preload="metadata" title="{esc(r.label)}" '
                     f'src="{_data_uri(r.sample_wav, "audio/wav", out)}"></audio>']
            if r.sample_png is not None:
                block.append(f'<img alt="waveform of {esc(r.label)}" '
                             f'src="{_data_uri(r.sample_png, "image/png", out)}">')
            block.append("</div>")
            body.append("\n".join(block))
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
           + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")
    write_text(path, doc)


# ----------------------------------------------------------------------------------- main


def build_report(dirs: Sequence[Path], out: Path, title: str | None = None,
                 sort: str = DEFAULT_SORT) -> list[Run]:
    """Collect the runs under `dirs`, write the report files into `out`, return the rows."""
    check_sort(sort)  # before reading anything
    paths = find_runs(dirs)
    if not paths:
        sweeps = sorted(p.parent for d in dirs for p in d.glob("*/multirun.yaml"))
        hint = (f"; it holds multirun directories ({len(sweeps)}), give one, e.g. the newest: "
                f"{max(sweeps, key=lambda p: p.stat().st_mtime)}" if sweeps else "")
        raise UserError(f"{', '.join(map(str, dirs))}: no runs found (expected run "
                        f"directories with summary.json, .hydra/ or metrics.csv){hint}")
    runs = [load_run(p) for p in paths]
    common = _label_runs(runs, several_dirs=len(dirs) > 1)
    runs = rank_runs(runs, sort)
    out.mkdir(parents=True, exist_ok=True)
    if title is None:
        names = {r.summary.get("sweep_name") for r in runs} - {None}
        title = (f"Sweep {' / '.join(sorted(map(str, names)))}" if names
                 else f"Runs in {dirs[0].resolve().name}")
    curves = {r.label: r.curves for r in runs if r.curves}
    curves_png = None
    if curves:
        curves_png = plot_learning_curves(out / "learning_curves.png", curves,
                                          title=f"{title}: loss per epoch")
    write_csv(out / "report.csv", runs)
    write_markdown(out / "report.md", title, runs, common, curves_png, sort)
    write_html(out / "report.html", title, runs, common, curves_png, sort)
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="report.py",
        description="Compare the runs of a sweep: table, learning curves and audio "
                    "(report.md, report.csv, report.html, learning_curves.png).")
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR",
                        help="a multirun directory (its runs are sub-directories) or run "
                             "directories")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the report (default: DIR; required with "
                             "several DIRs)")
    parser.add_argument("--title", default=None, help="report title (default: the sweep name)")
    parser.add_argument("--sort", default=DEFAULT_SORT, metavar="KEY",
                        help=f"rank runs by this summary field (default {DEFAULT_SORT}; "
                             f"one of: {', '.join(RANKABLE)})")
    args = parser.parse_args(argv)
    if args.out is None and len(args.dirs) > 1:
        raise UserError("several DIRs given: say where the report goes with --out DIR")
    out = args.out or args.dirs[0]
    if args.out is None and not args.dirs[0].is_dir():
        find_runs(args.dirs)  # the one-line error for a missing DIR
    runs = build_report(args.dirs, out, args.title, args.sort)
    n_ok = sum(r.status == "completed" for r in runs)
    best = next((r for r in runs if r.best), None)
    print(f"report: {out / 'report.html'} ({len(runs)} runs, {n_ok} completed"
          + (f"; best: {best.label}, {args.sort} {_num(sort_value(best, args.sort))}"
             if best else "") + ")",
          flush=True)
    return 0
