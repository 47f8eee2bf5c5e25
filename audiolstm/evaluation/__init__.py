"""Layer 2, evaluation: numbers and pictures about audio and predictions.

`metrics` (tick score, RMS, spectral distance, collapse metrics, the baselines' MSE),
`audio_score` (generated audio against held-out real audio: a calibrated log-mel
Fréchet score and its flags), `baselines` (persistence, ridge, copy-overlap),
`likelihood` (the canonical bits-per-sample grid and the conversions onto it), `plots`.
Pure functions over arrays and tensors; imports only the data layer below it.
"""
