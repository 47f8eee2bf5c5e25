"""Layer 1, data: from audio on disk to normalised example batches.

audio I/O and validation (`audio`), the memory-mapped cache (`cache`), data sources
(`sources`: the built-in drone of `synth`, one file, a folder), contiguous `splits`,
`normalize` (the five schemes and their exact inverses), `representation` (time, fft,
rfft frames), zero-copy `windows` and samplers, the `AudioDataModule`, and `DataState`,
the typed record of all of it that checkpoints carry.

Imports nothing above it (evaluation, models, generation, training, analysis).
"""
