"""bench/gpu_check.py: the GPU-day script, kept from rotting on CPU (issue 23).

Fast tests pin the parent's machinery with a stand-in steps script (timeouts kill a whole
process group, the budget skips what cannot fit, a step that dies is reported with its
log) and the host-sync patch the bench measures with; the slow test runs every real
step with `--dry-run` and checks that every section is there.
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
import torch

from audiolstm import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "bench"))
import gpu_check  # noqa: E402
from gpu_check import Budget, Fragment, Step  # noqa: E402

FAKE_STEPS = textwrap.dedent("""
    import json, subprocess, sys, time
    name = sys.argv[1]
    frag = sys.argv[sys.argv.index("--fragment") + 1]
    seconds = float(sys.argv[sys.argv.index("--seconds") + 1])
    if name == "ok":
        json.dump({"step": "ok", "title": "fine", "headline": f"seconds {seconds}",
                   "markdown": "all good", "data": {"x": 1}}, open(frag, "w"))
    elif name == "crash":
        print("boom: the last words")
        sys.exit(3)
    elif name == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open(sys.argv[sys.argv.index("--work") + 1] + "/grandchild.pid", "w").write(str(child.pid))
        time.sleep(60)
    elif name == "marker":
        open(sys.argv[sys.argv.index("--work") + 1] + "/started", "w").write("yes")
""")


@pytest.fixture
def fake_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "fake_steps.py"
    script.write_text(FAKE_STEPS)
    monkeypatch.setattr(gpu_check, "STEPS_SCRIPT", script)
    work = tmp_path / "work"
    work.mkdir()
    return work


def _args(dry: bool = False) -> object:
    return type("Args", (), {"dry_run": dry})()


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_step_writes_its_fragment_and_gets_the_curve_seconds(fake_steps: Path) -> None:
    frag = gpu_check.run_step(Step("ok", "fine", 1, 30), _args(dry=True), fake_steps,
                              Budget(100), 0)
    assert frag.status == "ok" and frag.data == {"x": 1} and frag.seconds > 0
    assert frag.headline == "seconds 0.0"  # not a curve step: no training seconds


def test_a_step_that_dies_is_failed_with_its_exit_code_and_log_tail(fake_steps: Path) -> None:
    """Mutant caught: reading a stale fragment (or none) as success."""
    (fake_steps / "fragments").mkdir()
    (fake_steps / "fragments" / "crash.json").write_text(json.dumps({"step": "crash",
                                                                     "title": "old"}))
    frag = gpu_check.run_step(Step("crash", "dies", 1, 30), _args(), fake_steps, Budget(100), 0)
    assert frag.status == "failed"
    assert "exit code 3" in frag.headline and "no fragment" in frag.headline
    assert "boom: the last words" in frag.markdown


def test_a_hung_step_is_killed_at_its_limit_with_everything_it_started(fake_steps: Path) -> None:
    """Mutant caught: killing the step's process only (proc.kill()) leaves its children
    (train.py jobs, DDP ranks, loader workers) running on the device."""
    t0 = time.monotonic()
    frag = gpu_check.run_step(Step("hang", "hangs", 1, 1.5), _args(dry=True), fake_steps,
                              Budget(100), 0)
    assert frag.status == "timeout" and "limit" in frag.headline
    assert time.monotonic() - t0 < 20
    pid = int((fake_steps / "grandchild.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_the_budget_skips_a_step_that_cannot_fit_without_starting_it(fake_steps: Path) -> None:
    """Mutant caught: a budget that is only reported, never enforced."""
    budget = Budget(10)  # 10 s left; the step expects 60 (it starts with half of that)
    frag = gpu_check.run_step(Step("marker", "big", 60, 120), _args(), fake_steps, budget, 0)
    assert frag.status == "skipped" and "budget" in frag.headline
    assert not (fake_steps / "started").exists()
    frag = gpu_check.run_step(Step("marker", "small", 10, 120), _args(), fake_steps, budget, 0)
    assert frag.status == "failed" and (fake_steps / "started").exists()  # ran; no fragment


def test_the_step_limit_never_outlasts_the_budget() -> None:
    timeout, _, skip = gpu_check.step_limits(Step("x", "x", 10, 500), False, Budget(100), 0)
    assert skip == "" and 99 < timeout <= 100


def test_the_loss_curves_share_what_is_left_of_the_budget() -> None:
    """Known answers: (left − 5) / curves − overhead, clamped to [20, 90] s."""
    assert gpu_check.curve_seconds(200, 2) == pytest.approx((200 - 5) / 2 - 20)
    assert gpu_check.curve_seconds(1000, 2) == 90
    assert gpu_check.curve_seconds(60, 2) == 20
    assert gpu_check.curve_seconds(200, 1) == 90
    curve = Step("curves_fp32", "curve", 80, 200)
    timeout, seconds, skip = gpu_check.step_limits(curve, False, Budget(200), 2)
    assert skip == "" and seconds == pytest.approx(77.5, abs=0.1)
    assert timeout == pytest.approx(seconds + 60)
    _, _, skip = gpu_check.step_limits(curve, False, Budget(30), 1)  # 20 s + 20 s overhead
    assert "budget" in skip
    _, seconds, _ = gpu_check.step_limits(curve, True, Budget(30), 1)
    assert seconds == gpu_check.DRY_CURVE_S


def test_missing_packages_are_one_line_before_the_clock_and_nothing_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(gpu_check, "REQUIRED_MODULES", ("no_such_module_for_gpu_check",))
    out = tmp_path / "out"
    assert gpu_check.main(["--dry-run", "--out", str(out), "--work", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: missing on this machine: "
                                                   "no_such_module_for_gpu_check")
    assert "make gpu-wheels" in err and not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_cuda_only_the_dry_run_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(gpu_check, "REQUIRED_MODULES", ())
    out = tmp_path / "out"
    assert gpu_check.main(["--out", str(out), "--work", str(tmp_path / "w")]) == 2
    assert "no CUDA device is visible" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--only", "env,nope"], "unknown step(s) nope"),
    (["--jobs", "2"], "more than one step at once only in a dry run"),
])
def test_bad_options_are_one_line(argv: list[str], message: str,
                                  capsys: pytest.CaptureFixture) -> None:
    assert gpu_check.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_results_list_every_step_in_order_with_its_status(tmp_path: Path) -> None:
    frags = {
        "lstm_tf32": Fragment("lstm_tf32", "t", "ok", "12 steps/s | fast", "## table"),
        "env": Fragment("env", "e", "ok", "H200", "versions"),
        "ddp": Fragment("ddp", "d", "skipped", "1 CUDA device", "Skipped: 1 CUDA device."),
    }
    meta = {"dry_run": False, "budget_s": 480.0, "wall_s": 12.0, "argv": []}
    gpu_check.write_results(frags, meta, tmp_path, tmp_path / "work")
    md = (tmp_path / gpu_check.RESULTS_MD).read_text()
    assert "Machine: H200" in md and "Dry run" not in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and "status" not in line]
    assert [r.split(" | ")[0][2:] for r in rows] == ["env", "lstm_tf32", "ddp"]  # STEPS order
    assert "| 12 steps/s / fast |" in rows[1]  # a "|" in a headline cannot break the table
    assert md.index("## env:") < md.index("## lstm_tf32:") < md.index("## ddp:")
    data = json.loads((tmp_path / gpu_check.RESULTS_JSON).read_text())
    assert data["steps"]["ddp"]["status"] == "skipped" and data["budget_s"] == 480.0
    assert not (tmp_path / gpu_check.CURVES_PNG).exists()  # no curves measured, no plot


def test_the_curves_are_compared_at_the_last_epoch_both_reached() -> None:
    """Known answers. Mutant caught: comparing each curve's own last point (bf16 gets
    through more epochs in the same seconds: that gap is speed, not precision)."""
    def curve(name: str, losses: list[float]) -> Fragment:
        points = [{"epoch": i + 1, "val_loss": v} for i, v in enumerate(losses)]
        return Fragment(name, name, "ok", data={"points": points})

    close = gpu_check.compare_curves({"curves_fp32": curve("curves_fp32", [1.0, 0.5]),
                                      "curves_bf16": curve("curves_bf16", [1.0, 0.505, 0.3])})
    assert close is not None and close["epoch"] == 2 and close["common_epochs"] == 2
    assert close["relative_diff"] == pytest.approx(0.01)
    assert close["max_relative_diff"] == pytest.approx(0.01) and close["within_tolerance"]
    far = gpu_check.compare_curves({"curves_fp32": curve("curves_fp32", [1.0, 0.5]),
                                    "curves_bf16": curve("curves_bf16", [1.0, 0.52])})
    assert far is not None and not far["within_tolerance"]
    failed = Fragment("curves_bf16", "x", "failed")
    assert gpu_check.compare_curves({"curves_fp32": curve("curves_fp32", [1.0]),
                                     "curves_bf16": failed}) is None


# ----------------------------------------------------------------------------- the patch


def test_host_syncs_off_keeps_the_train_error_sums_and_restores_the_shipped_code() -> None:
    """The measured "off" must compute what "on" computes, minus the host reads, and leave
    the library as it was. Mutants caught: sums changed by the patch; a patch not undone
    (NaN losses would then train on silently)."""
    import gpu_steps

    from audiolstm.models import base, frame_rnn

    shipped = frame_rnn.AudioRNN._accumulate_train_error
    model = frame_rnn.AudioRNN(6, hidden_sizes=[4])
    pred, y = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    model.on_train_epoch_start()
    model._accumulate_train_error(pred, y)
    want = model._train_sse.clone()
    with gpu_steps.host_syncs_off() as counts:
        assert base.torch.isfinite(torch.tensor(float("nan"))) is True
        model.on_train_epoch_start()
        model._accumulate_train_error(pred, y)
        got = model._train_sse
    assert torch.equal(got, want) and got.dtype == torch.float64
    assert counts == {"isfinite": 1, "train_error": 1}
    assert base.torch is torch and frame_rnn.AudioRNN._accumulate_train_error is shipped
    assert not base.torch.isfinite(torch.tensor(float("nan")))


# ----------------------------------------------------------------------------- the dry run


@pytest.mark.slow
def test_the_dry_run_runs_every_step_and_writes_every_section(tmp_path: Path) -> None:
    """`bench/gpu_check.py --dry-run`: every step's code runs on CPU (about a minute on a
    quiet 2-core machine, a few under load). What breaks here would break on the GPU day."""
    import subprocess

    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "gpu_check.py"),
                           "--dry-run", "--out", str(out), "--work", str(work)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_dry_run(out)


def check_dry_run(out: Path) -> None:
    """Every step ok and in the results, with the numbers each section is about."""
    data = json.loads((out / gpu_check.RESULTS_JSON).read_text())
    md = (out / gpu_check.RESULTS_MD).read_text()
    assert data["dry_run"] is True and "Dry run" in md
    steps = data["steps"]
    assert set(steps) == set(gpu_check.STEP_NAMES)
    for name, frag in steps.items():
        assert frag["status"] == "ok", (name, frag["headline"])
        assert frag["headline"] and frag["markdown"]
    sections = [md.index(f"## {name}: ") for name in gpu_check.STEP_NAMES]
    assert sections == sorted(sections)  # every section, in the order the steps run
    for mode in ("fp32", "tf32", "bf16"):
        d = steps[f"lstm_{mode}"]["data"]
        assert d["train_py"]["batches"] == 3 and d["train_py"]["batches_per_s"] > 0
        assert d["bare_batches_per_s"] > 0 and d["train_pct_peak"] > 0
    assert steps["lstm_bf16"]["data"]["precision"] == "bf16-mixed"
    assert steps["host_syncs"]["data"]["patched_calls"]["isfinite"] >= 1
    assert set(steps["samplernn"]["data"]) >= {"2tier_fp32", "3tier_bf16"}
    assert all(v <= 1e-3 for v in steps["generation"]["data"]["checks"].values())
    assert steps["ddp"]["data"]["world_size"] == 2
    assert steps["launcher"]["data"]["jobs"] == 2
    assert data["curves_compare"]["within_tolerance"] in (True, False)
    assert "## Loss curves: bf16-mixed vs float32" in md
    assert (out / gpu_check.CURVES_PNG).stat().st_size > 0
    with tarfile.open(out / gpu_check.LOGS_TAR) as t:
        names = set(t.getnames())
    assert {f"fragments/{n}.json" for n in gpu_check.STEP_NAMES} <= names
    assert len(list(out.iterdir())) <= 8  # what the device tool brings back
