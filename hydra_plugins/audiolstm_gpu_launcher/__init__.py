"""audiolstm's GPU launcher for Hydra (`hydra/launcher=gpus`): one sweep job per device.

Why a launcher of our own: the basic launcher runs jobs one after the other, joblib knows
nothing of devices, and submitit's local executor puts every job on GPU 0. This one runs
each job in a fresh Python process whose `CUDA_VISIBLE_DEVICES` names its own device (or
group of devices, for DDP inside a job) from the start, so torch in that process only ever
sees what it was given; the next job starts as soon as a device frees.

Hydra imports every module under `hydra_plugins` at start-up (plugin discovery), so
nothing here imports torch or cloudpickle at module level.
"""
