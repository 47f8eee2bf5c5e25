"""Layer 4, generation: continue a seed with a trained model and write the result.

`strategies` (stateful, refeed, sliding over frames; sampling), `reconstruction`
(framing, overlap-add, crossfade), `pipeline` (seed -> model -> audio at the original
scale -> WAV, PNG, JSON; the `generate.py` job). Imports data, evaluation and models.
"""
