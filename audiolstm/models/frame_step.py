"""One-frame steps of `AudioRNN` for stateful generation, without per-step overhead (issue 14).

Why: a stateful generation step is one frame through every layer, ~5 MFLOP for
lstm_300x3 at x_len 2000, memory-bound on the ~19 MB of weights. `nn.LSTM` called on
a length-1 sequence adds its own work per call (flattening weights, checking shapes,
allocating state) and computes the input and recurrent products as two matmuls. Here
each LSTM layer is one `addmm` over the concatenation [x, h] with [W_ih, W_hh]
(concatenated once), the gate maths in place on preallocated buffers, and each layer
writes its new h straight into the next layer's input slot. GRU layers (whose new
gate needs the recurrent product apart) use `torch.gru_cell`.

The outputs equal `AudioRNN.forward` on the same frames with the same state to float32
rounding (tests/test_generate.py: stepper against `nn.LSTM`/`nn.GRU`, stateful against
refeed). Eval mode only: dropout and input noise are training-time operations.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class _LSTMLayer:
    """An LSTM layer whose input lives in `xh[:, :D]` and its hidden state in `xh[:, D:]`."""

    def __init__(self, layer: nn.LSTM, h: Tensor, c: Tensor) -> None:
        d, hid = layer.input_size, layer.hidden_size
        self.d, self.hid = d, hid
        w = torch.cat([layer.weight_ih_l0, layer.weight_hh_l0], dim=1)  # (4H, D + H)
        self.w_t = w.t()  # addmm reads the transposed view as a column-major matrix
        self.bias = layer.bias_ih_l0 + layer.bias_hh_l0
        b = h.shape[0]
        self.xh = h.new_empty(b, d + hid)
        self.xh[:, d:] = h
        self.c = c.clone()
        self.gates = h.new_empty(b, 4 * hid)
        self.tmp = h.new_empty(b, hid)

    @property
    def x(self) -> Tensor:
        return self.xh[:, : self.d]

    @property
    def h(self) -> Tensor:
        return self.xh[:, self.d :]

    def step(self) -> None:
        """xh = [x, h] -> new h (in place, in xh[:, D:]) and c; gate order i, f, g, o."""
        self.cell(torch.addmm(self.bias, self.xh, self.w_t, out=self.gates))

    def cell(self, g: Tensor) -> None:
        """Pre-activation gates g (B, 4H) -> new h and c, in place."""
        hid = self.hid
        g[:, : 2 * hid].sigmoid_()  # i, f
        g[:, 3 * hid :].sigmoid_()  # o
        cand = g[:, 2 * hid : 3 * hid].tanh_()
        self.c.mul_(g[:, hid : 2 * hid]).addcmul_(g[:, :hid], cand)
        torch.mul(g[:, 3 * hid :], torch.tanh(self.c, out=self.tmp), out=self.h)

    def state(self) -> tuple[Tensor, Tensor]:
        return self.h[None].clone(), self.c[None].clone()


class _GRULayer:
    def __init__(self, layer: nn.GRU, h: Tensor) -> None:
        self.d = layer.input_size
        self.w = (layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0)
        self.x = h.new_empty(h.shape[0], self.d)
        self.h = h.clone()

    def step(self) -> None:
        self.h = torch.gru_cell(self.x, self.h, *self.w)

    def state(self) -> Tensor:
        return self.h[None].clone()


class FrameStepper:
    """`AudioRNN` one frame at a time from a carried state: `step(frame) -> head output`.

    `state` is what `AudioRNN.forward` returns (per layer (h, c) or h, each (1, B, H)),
    or None for zeros. `step(x)` with x (B, 1, D) returns what `forward(x, state)[0]`
    would, (B, 1, D_out), and carries the state.
    """

    def __init__(self, model: nn.Module, state: list[Any] | None, batch: int) -> None:
        if model.training:
            raise ValueError("FrameStepper runs eval-mode models only (call model.eval())")
        self.model = model
        like = next(model.parameters())
        self.layers: list[_LSTMLayer | _GRULayer] = []
        for i, layer in enumerate(model.layers):
            s = None if state is None else state[i]
            zeros = like.new_zeros(batch, layer.hidden_size)
            if isinstance(layer, nn.LSTM):
                h, c = (zeros, zeros) if s is None else (s[0][0], s[1][0])
                self.layers.append(_LSTMLayer(layer, h, c))
            else:
                self.layers.append(_GRULayer(layer, zeros if s is None else s[0]))
        head = model.head
        # the mse head is a plain Linear (MeanHead); others have their own forward
        self.linear_head = isinstance(head, nn.Linear) and type(head).forward is nn.Linear.forward
        if self.linear_head:
            self.head_w, self.head_b = head.weight.t(), head.bias
        # model.linear_ar: the head's location plus a linear map of the input frame
        self.linear_ar = getattr(model, "linear_ar", None)

    def can_fold(self) -> bool:
        """Whether `feedback_step` applies: a linear head whose frame is the first LSTM's input
        (and no linear AR path, whose input frame the fold would never form)."""
        first = self.layers[0]
        return (self.linear_head and self.linear_ar is None and isinstance(first, _LSTMLayer)
                and self.head_w.shape[1] == first.d)

    def feedback_step(self) -> Tensor:
        """`step(head(h_last))` without forming the fed-back frame as an input.

        Greedy generation with the mse head feeds back exactly the head's output, an affine
        map of the last layer's h, into the first layer's input matmul; the two fold into
        one (H_last x 4H) matrix, `W_ih @ W_head`, computed once: at lstm_300x3 and x_len
        2000 the first layer reads 1200 x 600 weights instead of 1200 x 2300 per step. The
        same sums in another order: equal to `step` to rounding (tests/test_generate.py).
        """
        first, last = self.layers[0], self.layers[-1]
        if not hasattr(self, "fold_w"):
            w_ih, w_hh = first.w_t[: first.d].t(), first.w_t[first.d :].t()
            self.fold_w = torch.cat([w_ih @ self.head_w.t(), w_hh], dim=1).t()
            self.fold_b = first.bias + w_ih @ self.head_b
            self.fold_xh = first.xh.new_empty(first.xh.shape[0], last.hid + first.hid)
        hl = last.hid
        self.fold_xh[:, :hl] = last.h
        self.fold_xh[:, hl:] = first.h
        first.cell(torch.addmm(self.fold_b, self.fold_xh, self.fold_w, out=first.gates))
        layers = self.layers
        for i in range(1, len(layers)):
            layers[i].x.copy_(layers[i - 1].h)
            layers[i].step()
        return torch.addmm(self.head_b, layers[-1].h, self.head_w)[:, None]

    def step(self, x: Tensor) -> Tensor:
        """x (B, 1, D) -> the head's output for the next frame, (B, 1, D_out)."""
        layers = self.layers
        layers[0].x.copy_(x[:, 0])
        for i, layer in enumerate(layers):
            layer.step()
            if i + 1 < len(layers):
                layers[i + 1].x.copy_(layer.h)
        h = layers[-1].h
        if self.linear_head:
            out = torch.addmm(self.head_b, h, self.head_w)[:, None]
        else:
            out = self.model.head(h[:, None])
        return out if self.linear_ar is None else self.model.with_linear_ar(out, x)

    def state(self) -> list[Any]:
        """The carried state in `AudioRNN.forward`'s format."""
        return [layer.state() for layer in self.layers]
