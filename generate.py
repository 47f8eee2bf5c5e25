"""Continue a seed with a trained model: `python generate.py ckpt_path=PATH [key=value ...]`."""

from audiolstm.cli import generate

if __name__ == "__main__":
    generate()
