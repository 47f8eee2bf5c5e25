"""Benchmark: the audio score's cost, and the measurements behind its design.

Cost (built-in data, nothing to download): seconds of compute per minute of audio for
`build_reference` (once per data set and clip length) and for `score_clip` (per clip),
each in a fresh interpreter, with numpy's BLAS left at its default threads and with
`OPENBLAS_NUM_THREADS=1` (on a shared machine, multi-threaded BLAS on 40x40 matrices
spends its time waiting for the other thread).

Calibration (`--corpus DIR`, a folder of audio files; `--wav FILE`, one long recording):
the reference is a few whole files (or the last 10 % of the recording), the held-out
real clips come from other files (or the 80-90 % part), 20 s and 4 s long. For each
clip the FD is computed two ways: against ONE Gaussian of the whole reference (the
plain FAD recipe) and as the module does it (within-clip covariances against the
reference's pooled clip-length windows), then turned into a score on the linear,
square-root and log scales. Reported: held-out real scores (median, 10th and 90th
percentiles), shaped and white noise, silence, real audio mixed with shaped noise at a
noise power share of 25/50/75 %, and white noise added at 20/10 dB SNR.

    python bench/bench_audio_score.py                   # cost only
    python bench/bench_audio_score.py --calibrate       # + calibration on the built-in data
    python bench/bench_audio_score.py --corpus DIR --wav FILE
    python bench/bench_audio_score.py --no-write        # print, leave RESULTS.md alone
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, write_section

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audiolstm.evaluation.audio_score import AudioScore  # noqa: E402

SR = 16_000
COST = "Audio score: cost (seconds per minute of audio)"
CALIBRATION = "Audio score: calibration on real audio"
#: per data set and clip length: how many held-out real clips raise each flag
FLAG_LINES: list[str] = []
#: per data set and clip length: held partials of real clips and of broken audio
PARTIAL_LINES: list[str] = []
#: the flags' columns, in one order for the header and the rows
FLAG_COLUMNS = sorted(AudioScore.FLAG_NAMES)


# ---------------------------------------------------------------------------------- cost


def cost_child(reps: int) -> dict[str, float]:
    """In a fresh interpreter: time the reference and the clip scores on built-in audio."""
    from audiolstm.data.synth import synth_drone
    from audiolstm.evaluation.audio_score import build_reference, score_clip

    x = synth_drone(420.0, SR, seed=0)
    out: dict[str, float] = {}
    for ref_s, clip_s in ((60, 4.0), (60, 20.0), (300, 4.0), (300, 20.0)):
        ref_audio = x[-ref_s * SR :]
        build_reference(ref_audio[: 60 * SR], SR, clip_s)  # warm-up (imports, caches)
        best = math.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            ref = build_reference(ref_audio, SR, clip_s)
            best = min(best, time.perf_counter() - t0)
        out[f"ref_{ref_s}s_clip_{clip_s:g}s"] = best / (ref_s / 60)
        clips = [x[s : s + int(clip_s * SR)] for s in range(0, 60 * SR, int(clip_s * SR))]
        best = math.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            for c in clips:
                score_clip(c, ref)
            best = min(best, time.perf_counter() - t0)
        out[f"score_clip_{clip_s:g}s"] = best / (len(clips) * clip_s / 60)
    return out


def run_cost(reps: int) -> str:
    rows = {}
    for label, env in (("default BLAS threads", {}), ("OPENBLAS_NUM_THREADS=1",
                                                       {"OPENBLAS_NUM_THREADS": "1"})):
        load = os.getloadavg()[0]
        proc = subprocess.run([sys.executable, __file__, "--cost-child", str(reps)],
                              capture_output=True, text=True, env={**os.environ, **env},
                              check=True)
        rows[label] = (json.loads(proc.stdout.strip().splitlines()[-1]), load)
    keys = list(next(iter(rows.values()))[0])
    names = {"ref_60s_clip_4s": "build_reference, 1 min reference, 4 s clips",
             "ref_60s_clip_20s": "build_reference, 1 min reference, 20 s clips",
             "ref_300s_clip_4s": "build_reference, 5 min reference, 4 s clips",
             "ref_300s_clip_20s": "build_reference, 5 min reference, 20 s clips",
             "score_clip_4s": "score_clip, 4 s clips", "score_clip_20s": "score_clip, 20 s clips"}
    lines = [f"Machine: {machine()}.",
             f"Built-in audio (`synth_drone`), best of {reps} runs in a fresh interpreter per "
             "column; seconds of compute per minute of audio (of reference for "
             "`build_reference`, of clips for `score_clip`). Load average when each column "
             "started: " + ", ".join(f"{k} {v[1]:.1f}" for k, v in rows.items()) + ".", "",
             "| what | " + " | ".join(rows) + " |", "|---|" + "---:|" * len(rows)]
    for k in keys:
        lines.append(f"| {names.get(k, k)} | "
                     + " | ".join(f"{v[0][k]:.3f} s" for v in rows.values()) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- calibration


def _load(path: Path) -> np.ndarray:
    from audiolstm.data.audio import load_audio

    return np.asarray(load_audio(path, SR), np.float64)


def calibration(name: str, ref_pieces: list[np.ndarray], real: list[np.ndarray],
                clip_s: float) -> list[str]:
    """One block of the table: both FD designs, three scales."""
    from audiolstm.evaluation import audio_score as S
    from audiolstm.evaluation.metrics import mean_power_spectrum

    clip = int(clip_s * SR)
    ref = S.build_reference(ref_pieces, SR, clip_s)
    an = ref.analysis
    rng = np.random.default_rng(0)
    spectrum = np.mean([mean_power_spectrum(p) for p in ref_pieces], axis=0)
    mid = real[len(real) // 2]
    white = rng.standard_normal(clip)
    cases = {
        "shaped noise": S.shaped_noise(spectrum, clip, rng) * ref.level_std,
        "white noise": white * ref.level_std,
        "silence": np.zeros(clip),
        **{f"real + shaped noise, {int(a * 100)} % noise": math.sqrt(1 - a) * mid
           + math.sqrt(a) * S.shaped_noise(spectrum, clip, rng) * mid.std()
           for a in (0.25, 0.5, 0.75)},
        **{f"real + white noise, SNR {db} dB": mid + white * mid.std() / 10 ** (db / 20)
           for db in (20, 10)},
    }
    # the plain recipe: one Gaussian (mean, covariance) of every reference frame
    frames = np.concatenate([an.log_mel(p) for p in ref_pieces])
    mu, cov = frames.mean(axis=0), np.cov(frames.T)

    def plain(x: np.ndarray) -> float:
        f = an.log_mel(x)
        return S.frechet_distance(f.mean(axis=0), np.cov(f.T), mu, cov)

    def module(x: np.ndarray) -> float:
        return S.score_clip(x, ref).fd

    flags: dict[str, int] = {}
    held = []
    for x in real:
        scored = S.score_clip(x, ref)
        held.append(scored.partials / ref.partials)
        for k, v in scored.flags.items():
            flags[k] = flags.get(k, 0) + int(v)
    FLAG_LINES.append(f"| {name}, {clip_s:g} s | {len(real)} | "
                      + " | ".join(str(flags[k]) for k in FLAG_COLUMNS) + " |")
    # low rumble (noise under 100 Hz) with clicks, at the reference's level: the music
    # recipe's failure, which loudness, flatness and the score all passed
    freqs = np.fft.rfftfreq(clip, 1 / SR)
    rumble = np.fft.irfft(np.fft.rfft(rng.standard_normal(clip)) * (freqs < 100), clip)
    rumble[rng.integers(0, clip, 6 * int(clip_s))] += 4 * rumble.std()
    broken = {"shaped noise": cases["shaped noise"], "white noise": cases["white noise"],
              "rumble + clicks": rumble * ref.level_std / rumble.std()}
    PARTIAL_LINES.append(
        f"| {name}, {clip_s:g} s | {ref.partials:.2f} | {min(held):.2f} / "
        f"{np.percentile(held, 5):.2f} / {np.median(held):.2f} | "
        + " | ".join(f"{S.score_clip(v, ref).partials / ref.partials:.3f}"
                     for v in broken.values()) + " |")
    plain_floor = float(np.median([plain(h) for h in real[::3]]))  # held-out: a kind floor
    plain_ceiling = float(np.median([plain(S.shaped_noise(spectrum, clip, rng)
                                           * ref.level_std) for _ in range(4)]))
    scales = {"linear": lambda v: v, "sqrt": math.sqrt, "log": math.log}
    out = []
    for design, fd, floor, ceiling in (
            ("one Gaussian of the whole reference", plain, plain_floor, plain_ceiling),
            ("within-clip (the module)", module, ref.fd_floor, ref.fd_ceiling)):
        real_fd = [fd(x) for x in real]
        case_fd = {k: fd(v) for k, v in cases.items()}
        for scale, f in scales.items():
            def score(v: float, f=f, lo=floor, hi=ceiling) -> float:
                return (f(hi) - f(v)) / (f(hi) - f(lo))

            r = np.array([score(v) for v in real_fd])
            p10, p50, p90 = np.percentile(r, [10, 50, 90])
            sep = p50 / (p90 - p10) if p90 > p10 else math.inf
            out.append(f"| {name}, {clip_s:g} s | {design} | {scale} | {floor:.0f} / "
                       f"{ceiling:.0f} | {p50:.2f} [{p10:.2f}, {p90:.2f}] | {sep:.2f} | "
                       + " | ".join(f"{score(v):.2f}" for v in case_fd.values()) + " |")
    return out


SENTENCES = (
    ("The quick brown fox jumps over the lazy dog near the river bank. Researchers trained "
     "recurrent networks on hours of recorded music and speech. A calibrated score compares "
     "generated audio with held out recordings of the same kind. Every second of silence, "
     "every burst of noise and every stuck loop gets a number. ") * 6,
    ("She sells sea shells by the sea shore while the tide comes in slowly. Yesterday the "
     "weather changed from bright sunshine to heavy rain within an hour. Please remember to "
     "close the window before you leave the laboratory tonight. Numbers without units mean "
     "nothing, so always write down the machine you used. ") * 4,
)


def _speech() -> tuple[np.ndarray, np.ndarray]:
    """Two voices reading different sentences (espeak-ng), at 16 kHz."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (text, voice) in enumerate(zip(SENTENCES, ("en-us", "en-gb"), strict=True)):
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), text],
                           check=True)
            out.append(_load(wav))
    return out[0], out[1]


def run_calibration(corpus: Path | None, wav: Path | None) -> str:
    blocks: list[str] = []
    header = ("| data, clip | FD | scale | floor / ceiling (FD) | held-out real: median "
              "[P10, P90] | separation | shaped | white | silence | +25 % noise | +50 % | "
              "+75 % | SNR 20 dB | SNR 10 dB |\n|---|---|---|---:|---:|---:|" + "---:|" * 8)
    notes = ["built-in data (`synth_drone`, 150 s): reference = its last 60 s, held-out "
             "real clips = every 7 s of its first 80 s"]
    from audiolstm.data.synth import synth_drone

    x = synth_drone(150.0, SR, seed=0)
    for clip_s in (20.0, 4.0):
        c = int(clip_s * SR)
        blocks += calibration("built-in", [x[90 * SR :]],
                              [x[s : s + c] for s in range(SR, 80 * SR - c, 7 * SR)], clip_s)
    if shutil.which("espeak-ng"):
        a, b = _speech()
        notes.append(f"speech (`espeak-ng`): reference = {len(a) / SR:.0f} s of an en-us voice "
                     f"reading 4 sentences, held-out real clips = consecutive clips of "
                     f"{len(b) / SR:.0f} s of an en-gb voice reading 4 other sentences")
        for clip_s in (10.0, 4.0):
            c = int(clip_s * SR)
            blocks += calibration("speech", [a], [b[s : s + c] for s in range(0, len(b) - c, c)],
                                  clip_s)
    if corpus is not None:
        from audiolstm.data.audio import list_audio_files

        files = list_audio_files(corpus)
        order = np.random.default_rng(5).permutation(len(files))
        ref = [_load(files[i]) for i in order[:6]]
        held = [_load(files[i]) for i in order[6:16]]
        notes.append(f"corpus `{corpus.name}/`: reference = 6 files "
                     f"({sum(len(p) for p in ref) / SR / 60:.1f} min), held-out real clips = "
                     f"3 per file (at 25/50/75 % of its length) of 10 other files")
        for clip_s in (20.0, 4.0):
            c = int(clip_s * SR)
            real = [h[a : a + c] for h in held for a in
                    (int(len(h) * q) for q in (0.25, 0.5, 0.75)) if a + c <= len(h)]
            blocks += calibration("corpus", ref, real, clip_s)
    if wav is not None:
        x = _load(wav)
        n = len(x)
        notes.append(f"`{wav.name}` ({n / SR / 60:.1f} min): reference = its last 10 %, "
                     "held-out real clips = 12 evenly spaced in its 80-90 % part")
        val = x[int(0.8 * n) : int(0.9 * n)]
        for clip_s in (20.0, 4.0):
            c = int(clip_s * SR)
            real = [val[s : s + c] for s in np.linspace(0, len(val) - c, 12).astype(int)]
            blocks += calibration("recording", [x[int(0.9 * n) :]], real, clip_s)
    return "\n".join([f"Machine: {machine()}.", "", *[f"- {n}" for n in notes], "",
                      "Scores are `(f(ceiling) - f(FD)) / (f(ceiling) - f(floor))` on each "
                      "scale f. *separation* = median held-out real score ÷ (P90 − P10): how "
                      "many real-audio spreads lie between real audio and shaped noise (0). "
                      "For the whole-reference design the floor is the median FD of held-out "
                      "clips (the kindest choice for it).", "", header, *blocks, "",
                      "Flags raised on the held-out real clips (default thresholds; a flag on "
                      "real audio is a false alarm):", "",
                      "| data, clip | clips | " + " | ".join(FLAG_COLUMNS) + " |",
                      "|---|---:|" + "---:|" * len(FLAG_COLUMNS), *FLAG_LINES, "",
                      "Held partials (`audio_partials`): the reference's per frame, then each "
                      "clip's ÷ the reference's (`no_partials` below 0.1):", "",
                      "| data, clip | reference per frame | held-out real: min / P5 / median | "
                      "shaped noise | white noise | rumble + clicks |",
                      "|---|---:|---:|---:|---:|---:|", *PARTIAL_LINES])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--corpus", type=Path, default=None)
    p.add_argument("--wav", type=Path, default=None)
    p.add_argument("--calibrate", action="store_true")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--no-cost", action="store_true")
    p.add_argument("--cost-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.cost_child is not None:
        print(json.dumps(cost_child(args.cost_child)))
        return
    if not args.no_cost:
        body = run_cost(args.reps)
        print(body)
        if not args.no_write:
            write_section(COST, body)
    if args.corpus or args.wav or args.calibrate:
        body = run_calibration(args.corpus, args.wav)
        print(body)
        if not args.no_write:
            write_section(CALIBRATION, body)


if __name__ == "__main__":
    main()
