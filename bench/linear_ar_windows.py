"""Where a frame model wins and loses against the ridge baseline, window by window.

    python bench/linear_ar_windows.py RUN_DIR [--ckpt best|last]

RUN_DIR is a finished `train.py` run (its `.hydra/config.yaml` and checkpoints). The run's
data are rebuilt from its config, the ridge is refitted on its training split (as the run
did), and on the validation and test splits each evaluation window's MSE is compared:
the model's over the ridge's, by window (in the split's order) and by frame position
inside the windows (each window starts the RNN from a zero state). Printed, not written:
README "A linear path" quotes it for the default run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def ratios(model, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window and per-frame-position MSE of the model and the ridge: (model, ridge),
    each `[windows, frames]`."""
    from audiolstm.evaluation.baselines import ridge_predict

    mine, ridge = [], []
    with torch.no_grad():
        for batch in loader:
            x, y = batch[:, :-1], batch[:, 1:]
            out, _ = model(x)
            mine.append(((model.head.mean(out) - y) ** 2).mean(-1))
            ridge.append(((ridge_predict(x, *model.ridge) - y) ** 2).mean(-1))
    return torch.cat(mine), torch.cat(ridge)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--ckpt", default="best", choices=["best", "last"])
    p.add_argument("--cache-dir", help="the data cache (default: the repository's)")
    args = p.parse_args()
    from audiolstm.config import to_container
    from audiolstm.data.datamodule import AudioDataModule
    from audiolstm.models.checkpoints import model_from_checkpoint

    cfg = OmegaConf.load(args.run_dir / ".hydra" / "config.yaml")
    # the run's data cache (its path interpolates Hydra's, unresolvable outside a run)
    cfg.data.cache_dir = args.cache_dir or str(ROOT / ".cache" / "audiolstm")
    pattern = "best-*.ckpt" if args.ckpt == "best" else "last.ckpt"
    found = sorted((args.run_dir / "checkpoints").glob(pattern))
    if not found:
        raise SystemExit(f"{args.run_dir}/checkpoints: no {pattern}")
    dm = AudioDataModule(to_container(cfg.data), to_container(cfg.norm),
                         to_container(cfg.repr), seed=cfg.seed)
    dm.setup()
    model = model_from_checkpoint(found[-1])
    # the run's own penalty rule: chosen on val (ridge_alpha null), fixed, or 1 (older runs)
    alpha = cfg.ridge_alpha if "ridge_alpha" in cfg else 1.0
    model.fit_ridge(dm.train_frame_pairs, alpha, dm.val_frame_pairs)
    print(f"{found[-1]}")
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        mine, ridge = ratios(model, loader)
        frames = mine.shape[1]
        print(f"{split}: {mine.shape[0]} windows of {frames} frames; MSE model "
              f"{mine.mean():.4f}, ridge {ridge.mean():.4f} ({mine.mean() / ridge.mean():.3f} x)")
        by_pos = mine.mean(0) / ridge.mean(0)
        print("  by frame position, frames 0-4:",
              " ".join(f"{v:.3f}" for v in by_pos[:5].tolist()))
        step = max(1, frames // 10)
        tenths = [float(mine[:, i : i + step].mean() / ridge[:, i : i + step].mean())
                  for i in range(0, frames, step)]
        print(f"  by frame position, groups of {step}:", " ".join(f"{v:.3f}" for v in tenths))
        print("  by window, model / ridge:",
              " ".join(f"{v:.2f}" for v in (mine.mean(1) / ridge.mean(1)).tolist()))
        print("  by window, ridge MSE:", " ".join(f"{v:.2f}" for v in ridge.mean(1).tolist()))


if __name__ == "__main__":
    main()
