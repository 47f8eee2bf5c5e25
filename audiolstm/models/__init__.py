"""Layer 3, models: the networks and everything they are trained with.

`base` (manual optimisation, the one truncated-BPTT chunk loop, recurrent-state helpers,
checkpoint extras), `frame_rnn` (AudioRNN: next-frame prediction), `samplernn`
(SampleRNN: sample-level softmax), `heads`, `losses`, `quantize`, `registry` (config or
checkpoint -> class) and `checkpoints` (safe loading). Imports data and evaluation only.
"""
