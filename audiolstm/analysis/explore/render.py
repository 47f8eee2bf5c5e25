"""The study's reports: `explore.md` (tables, linked PNGs), `explore.html` (one
self-contained page, PNGs inlined) and `explore.json` (every number), from the result.

Both text reports are built from the same tables (`tables`), so they never disagree;
every file is written atomically.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audiolstm.analysis.explore.formatting import clock, num
from audiolstm.atomic import write_json, write_text


def tables(r: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables as (title, header, rows) of text, shared by Markdown and HTML."""
    src, sil, fade, pul = r["source"], r["silence"], r["fade_out"], r["pulsation"]
    sr = src["sample_rate"]
    out = []
    out.append(("Source", ["field", "value"], [
        ["source", str(src.get("source"))], ["path", str(src.get("path"))],
        ["sample rate (Hz)", num(sr)], ["samples", num(src["num_samples"])],
        ["duration", f"{clock(src['duration_seconds'])} ({num(src['duration_seconds'], 6)} s)"],
    ]))
    if "corpus" in r:
        out.append(_files_table(r["corpus"], r.get("training_silence")))
    if "training_silence" in r:
        out.append(_training_silence_table(r["training_silence"]))
    lead = sil["lead_in_samples"]
    fade_start = fade["start_seconds"]
    fade_start_sample = round(fade_start * sr) if math.isfinite(fade_start) else None
    out.append(("Lead-in and fade-out", ["quantity", "samples", "seconds"], [
        ["lead-in silence", num(lead), num(sil["lead_in_seconds"])],
        ["trailing silence", num(sil["trailing_silence_samples"]),
         num(sil["trailing_silence_seconds"])],
        ["fade-out length", num(fade["samples"]), num(fade["seconds"])],
        ["fade-out start (from file start)", num(fade_start_sample), num(fade_start, 7)],
        ["silence threshold (amplitude)", "", num(sil["threshold"])],
    ]))
    ov = pul["overall"]
    rows = [["whole file", num(ov["period_seconds"]), num(ov["per_minute"]),
             num(ov["strength"], 3)]]
    rows += [[f"{clock(reg['start_seconds'])}–{clock(reg['end_seconds'])}",
              num(reg["period_seconds"]), num(reg["per_minute"]), num(reg["strength"], 3)]
             for reg in pul["regions"]]
    out.append(("Pulsation period", ["stretch", "period (s)", "pulses per minute",
                                        "autocorrelation"], rows))
    stat_rows = []
    for name, st in [*r["splits"].items(), ("whole", r["whole"])]:
        span = (f"{clock(st['start_seconds'])}–{clock(st['end_seconds'])}"
                if "start_seconds" in st else "")
        if len(st.get("ranges_seconds", ())) > 1:
            span = f"{len(st['ranges_seconds'])} pieces in {span}"
        stat_rows.append([name, span, num(st["duration_seconds"]), num(st["mean"]),
                          num(st["std"]), num(st["min"]), num(st["max"]), num(st["rms"])])
    out.append(("Per-split statistics", ["split", "range", "duration (s)", "mean", "std",
                                            "min", "max", "RMS"], stat_rows))
    norm_rows = []
    for scheme, entry in r["normalization"].items():
        if "error" in entry:
            norm_rows.append([scheme, "", entry["error"], "", "", "", ""])
            continue
        for split, m in entry["splits"].items():
            norm_rows.append([scheme, split, num(m["shift"]), num(m["scale"]), num(m["min"]),
                              num(m["max"]), f"{num(m['mean'])} ± {num(m['std'])}"])
    out.append(("Normalisation (fitted on train): where each split lands",
                   ["scheme", "split", "shift", "scale", "min →", "max →", "mean ± std →"],
                   norm_rows))
    panel_rows = [[num(p["index"]), p["title"], p["file"],
                   "raw" if p["samples_per_minmax_pair"] == 1
                   else f"min/max of {p['samples_per_minmax_pair']} samples"]
                  for p in r["panels"]]
    panel_rows += [[num(s["index"]), s["label"], "skipped", s["reason"]]
                   for s in r["skipped_panels"]]
    out.append(("Waveform panels", ["#", "panel", "file", "drawn as"], panel_rows))
    return out


def _training_silence_table(ts: Mapping[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    """Per split: silent seconds and, where the split leaves silent examples out, how many."""
    rows = []
    for split, t in ts["splits"].items():
        left = "excluded_examples" in t
        rows.append([split, num(t["seconds"]), num(t["silent_seconds"]),
                     num(t["examples_before"]) if left else "every window",
                     num(t["excluded_examples"]) if left else "",
                     num(t["excluded_seconds"]) if left else "",
                     num(100 * t["excluded_share"], 3) if left else ""])
    title = (f"Silence-aware training data (data.silence_db={num(ts['silence_db'])}, "
             f"data.max_silent_fraction={num(ts['max_silent_fraction'])})")
    return title, ["split", "seconds", "silent (s)", "examples", "left out", "left out (s)",
                   "left out (%)"], rows


def _files_table(corpus: Mapping[str, Any], training_silence: Mapping[str, Any] | None = None
                 ) -> tuple[str, list[str], list[list[str]]]:
    header = ["#", "file", "starts at", "duration", "RMS (dBFS)", "peak (dBFS)", "silent (%)",
              "split"]
    # silence-aware data: the training seconds of each file that no example reads any more
    left = {f["index"]: f["splits"].get("train", {}) for f in
            (training_silence or {}).get("files", [])}
    if left:
        header += ["train left out (s)", "train left out (%)"]
    rows = []
    for f in corpus["files"]:
        split = f["split"]
        if "+" in split:  # a file shared by splits: how much of it each holds
            split = ", ".join(f"{name} {clock(secs)}" for name, secs in f["split_seconds"].items()
                              if secs > 0)
        share = f["silence_share"]
        rows.append([num(f["index"]), f["name"], clock(f["start_seconds"]),
                     clock(f["duration_seconds"]), num(f["rms_dbfs"], 3),
                     num(f["peak_dbfs"], 3), num(None if share is None else 100 * share, 3),
                     split])
        if left:
            t = left.get(f["index"], {})
            rows[-1] += ([num(t["excluded_seconds"]), num(100 * t["excluded_share"], 3)]
                         if "excluded_seconds" in t else ["", ""])
    return f"Files ({len(rows)})", header, rows


_FIGURES = (
    ("files.png", "The corpus, file by file: duration by split, level, silence"),
    ("waveforms.png", "Waveforms at the seed post's scales"),
    ("spectrogram.png", "Spectrogram of a representative stretch"),
    ("envelope.png", "Long-term RMS envelope with the split boundaries"),
    ("pulsation.png", "Pulsation period over time"),
    ("autocorrelation.png", "Autocorrelation of the envelope"),
)


def _notes(r: Mapping[str, Any]) -> list[str]:
    notes = [
        f"Silence: {r['silence']['definition']}.",
        f"Fade-out: {r['fade_out']['definition']} (here: {r['fade_out']['method']}).",
        f"Pulsation period: {r['pulsation']['definition']}.",
    ]
    if "corpus" in r:
        notes.insert(0, f"Files: silent (%) is the {r['corpus']['silence_definition']}; "
                        f"{r['corpus']['split_rule']}.")
    if "training_silence" in r:
        notes.append(f"Silence-aware training data: {r['training_silence']['definition']}.")
    return notes


def render_markdown(r: Mapping[str, Any]) -> str:
    """`explore.md`: tables and links to the PNGs next to it."""
    src = r["source"]
    lines = [f"# Exploration of {src.get('path') or src.get('source')}", ""]
    for title, header, rows in tables(r):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines.append("")
    lines += ["## Figures", ""]
    for name, caption in _FIGURES:
        if name in r["files"]:
            lines += [f"### {caption}", "", f"![{caption}]({name})", ""]
    lines += ["## Definitions", ""] + [f"- {note}" for note in _notes(r)] + [""]
    return "\n".join(lines)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(r: Mapping[str, Any], out_dir: Path) -> str:
    """`explore.html`: one self-contained file (PNGs inlined as base64 data URIs)."""
    esc = html.escape
    src = r["source"]
    title = f"Exploration of {src.get('path') or src.get('source')}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1300px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;"
        "padding:2px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for t_title, header, rows in tables(r):
        parts.append(f"<h2>{esc(t_title)}</h2><table><tr>"
                     + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    for name, caption in _FIGURES:
        if name in r["files"] and (out_dir / name).is_file():
            parts.append(f"<h2>{esc(caption)}</h2>"
                         f'<img alt="{esc(caption)}" src="{_data_uri(out_dir / name)}">')
    panels = [p for p in r["panels"] if (out_dir / p["file"]).is_file()]
    if panels:
        parts.append("<h2>Waveform panels, one by one</h2>")
        parts += [f"<h3>{esc(p['title'])}</h3>"
                  f'<img alt="{esc(p["title"])}" src="{_data_uri(out_dir / p["file"])}">'
                  for p in panels]
    parts.append("<h2>Definitions</h2><ul>"
                 + "".join(f"<li>{esc(n)}</li>" for n in _notes(r)) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"




def write_reports(result: Mapping[str, Any], out_dir: Path) -> None:
    """explore.json, explore.md and explore.html in `out_dir`, each atomically."""
    write_json(out_dir / "explore.json", result)
    write_text(out_dir / "explore.md", render_markdown(result))
    write_text(out_dir / "explore.html", render_html(result, out_dir))
