"""An optional linear autoregressive path for the frame RNN (`model.linear_ar`).

Why: the best linear one-frame predictor (the ridge baseline, evaluation/baselines.py) is
a D x D map from the last input frame to the next. A frame RNN reaches the next frame
only through its last hidden layer, H = 300 wide against a frame of D = 2000 samples, so
it cannot even represent that map: on the built-in data the default `lstm_300x3` lost to
the ridge (1.36 x its test MSE after 20 epochs). LSTNet (Lai et al. 2018, "Modeling
Long- and Short-Term Temporal Patterns with Deep Neural Networks") adds a linear
autoregressive "highway" to its network's output for the same reason: the network is
left to learn what is not linear. Here:

    output = head(rnn(x))[t] (+ at the location)  x[t] @ W + b

`W` (D_in x D_out, the ridge's orientation) and `b` read only the current input frame
`x[t]` as given (after scheduled sampling, before input noise and dropout: those are the
RNN's regularisers; the ridge is regularised by its own penalty). Settings:

- `null` (default of the schema): no path; the model, its parameters and its random
  initialisation are exactly those of a model without this option.
- `zero`: the path starts at W = 0, b = 0 (the model starts as the plain RNN) and is
  learnt with the rest.
- `ridge`: the path starts at the closed-form ridge fit the run already makes on the
  training frame pairs (`AudioRNN.fit_ridge`, then `AudioRNN.init_linear_ar`, which also
  starts the head's location at zero): the model starts at exactly the ridge's
  predictions, and the RNN learns the residual while the path is learnt on. Adam moves every one of the D^2
  weights by about the learning rate at each step whatever its gradient's size, so the
  first steps leave the ridge's optimum (1.45 x its validation MSE after one epoch of the
  default run) before joint training brings the loss back down.
- `ridge_fixed`: the path *is* the ridge fit and stays so (its weights are not trained:
  no gradient, no optimiser state, no D x D weight-gradient matmul per step); only the
  RNN learns, the residual of the best linear one-frame predictor.

Both ridge starts need the run's ridge fit (`ridge_baseline=true`, input dim at most
`evaluation.baselines.RIDGE_MAX_DIM`) and are refused otherwise. A warm start
(`init_from`) loads the checkpoint's path instead of the fit.

What "added to the output" means for each head (the path predicts a *location*):

- `mse`: added to the predicted frame;
- `gaussian`: added to the mean (the scale is the head's alone);
- `logistic_mixture`: added to every component's location, so the mixture models the
  distribution of the residual around the linear prediction (the grid clamp of `mean`
  and `sample` still applies to the sum).

Cost: D^2 + D parameters (4,002,000 at x_len = 2000, about as many as `lstm_300x3`
itself) and one D x D matmul per frame; bench/linear_ar.py measures both, and how much
of the ridge's gain a low-rank map would keep. Generation stays exact: the path depends
only on the current input frame, so stateful generation still equals re-feeding the
whole history (tests/test_linear_ar.py).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from audiolstm.errors import UserError

#: the values of `model.linear_ar` (None: no path)
LINEAR_AR = (None, "zero", "ridge", "ridge_fixed")
#: the values that start the path at the ridge fit
FROM_RIDGE = ("ridge", "ridge_fixed")


def check_linear_ar(value: str | None, key: str = "model.linear_ar") -> None:
    """One line for a value that is not one of `LINEAR_AR`."""
    if value not in LINEAR_AR:
        raise UserError(f"{key}={value!r} is not one of null, zero, ridge, ridge_fixed")


class LinearAR(nn.Module):
    """`x @ W + b` for frames `x (..., D)`: W is `(D_in, D_out)`, as the ridge returns it.

    Starts at zero (no random draws: building it does not change the RNG stream the rest
    of the model was initialised from).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim, dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        # the ridge's own expression (baselines.ridge_predict): started at the ridge fit,
        # the path computes its predictions to the last bit
        return x @ self.weight + self.bias

    @torch.no_grad()
    def load_ridge(self, w: Tensor, b: Tensor) -> None:
        """Start at the ridge fit `(W (D, D), b (D,))`."""
        if tuple(w.shape) != tuple(self.weight.shape) or tuple(b.shape) != tuple(self.bias.shape):
            raise ValueError(f"ridge fit of shapes {tuple(w.shape)}, {tuple(b.shape)} does not "
                             f"fit a linear path of {tuple(self.weight.shape)}")
        self.weight.copy_(w)
        self.bias.copy_(b)


def add_at_location(head: str, out: Tensor, linear: Tensor, components: int = 1) -> Tensor:
    """The head's output `out` with the linear prediction `linear (..., D)` added to its
    location (see the module docstring); `head` is `model.head`, `components` the
    mixture's."""
    if head == "mse":
        return out + linear
    if head == "gaussian":  # out = mean ‖ log_scale, (..., 2D)
        d = linear.shape[-1]
        return torch.cat([out[..., :d] + linear, out[..., d:]], dim=-1)
    if head == "logistic_mixture":  # out = logits ‖ means ‖ log_scales, (..., D, 3K)
        k = components
        return torch.cat([out[..., :k], out[..., k : 2 * k] + linear[..., None],
                          out[..., 2 * k :]], dim=-1)
    raise ValueError(f"no location to add a linear path to for head {head!r}")
