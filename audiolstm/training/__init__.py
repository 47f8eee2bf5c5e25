"""Layer 5, training: the `train.py` job around Lightning.

`run` (validate -> data -> model -> fit -> test -> summary.json), `callbacks` (progress,
per-batch reseeding, sample generation during training), `loggers` (W&B that never
blocks), `pruning` (Optuna trials pruned inside training). Imports every layer below.
"""
