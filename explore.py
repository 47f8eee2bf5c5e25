"""Explore a data source: `python explore.py [data=wav data.path=FILE]` (see README)."""

from audiolstm.cli import explore

if __name__ == "__main__":
    explore()
