"""audiolstm's own Optuna sweeper for Hydra (`hydra/sweeper=audiolstm_optuna`).

Why not hydra-optuna-sweeper: it pins optuna<3, whose SQLite storage breaks under
SQLAlchemy 2, and a search that cannot be stored cannot be resumed or shared. This one
is small, uses optuna>=4, stores every study in SQLite (resumable with
`load_if_exists`), and passes the trial to the job so training can prune itself.

Hydra imports every module under `hydra_plugins` at start-up (plugin discovery), so
nothing here imports optuna at module level: apps that never sweep pay nothing.
"""
