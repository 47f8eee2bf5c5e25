"""Layer 2, evaluation: numbers and pictures about audio and predictions.

`metrics` (tick score, RMS, spectral distance, collapse metrics, the baselines' MSE),
`baselines` (persistence, ridge, copy-overlap), `likelihood` (the canonical bits-per-sample
grid and the conversions onto it), `plots`. Pure functions over arrays and
tensors; imports only the data layer below it.
"""
