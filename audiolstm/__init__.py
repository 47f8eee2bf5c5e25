"""audiolstm: learn to generate raw audio with stacked recurrent networks.

PyTorch Lightning for the training loop, Hydra for configuration; the math
(windows, normalisers, representations, metrics) lives in small pure modules.
"""

from pathlib import Path

__version__ = "0.1.0"

#: The checkout the package runs from: `conf/` and `sweeps/` live here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
