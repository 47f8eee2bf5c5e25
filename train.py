"""Train a model: `python train.py [group=option ...] [key=value ...]` (see README)."""

from audiolstm.cli import train

if __name__ == "__main__":
    train()
