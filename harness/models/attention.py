"""One causal multi-head attention layer whose heads carry fixed multiplicities (SPEC 4, E6).

Input: a sequence of T tokens of dimension e (scalar tokens, e = 1, may be given as (B, T)).
Head h has its own query, key and value maps (head_dim x e) and output map (outputs x head_dim);
the layer's prediction is read at the last position (the query token):

    f(X) = sum_h c_h W_o^h  sum_t softmax_t(q_h . k_{h,t} / sqrt(head_dim)) v_{h,t}  + b,

with q_h = W_q^h x_T, k_{h,t} = W_k^h x_t, v_{h,t} = W_v^h x_t. The last position attends to every
position, so this is exactly a causal layer's output there; the other positions' outputs are never
used and are not computed. A head is an object (W_q, W_k, W_v, W_o flattened): m = 8 for scalar
tokens, head_dim 2 and a scalar output, as in the paper's toy. Gradient division works per head:
every parameter of head h is divided by c_h (see mlp.py for why); the output bias is shared.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class HeadsAttention(nn.Module):
    """Weights per head: ``query``/``key``/``value`` (H, head_dim, e), ``output`` (H, outputs, head_dim)."""

    def __init__(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        output: torch.Tensor,
        bias: torch.Tensor,
        multiplicity: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Parameter(query), nn.Parameter(key), nn.Parameter(value)
        self.output, self.bias = nn.Parameter(output), nn.Parameter(bias)
        if multiplicity is None:
            multiplicity = torch.ones(query.shape[0], dtype=query.dtype, device=query.device)
        self.register_buffer("multiplicity", torch.as_tensor(multiplicity, dtype=query.dtype, device=query.device))

    @property
    def heads(self) -> int:
        return self.query.shape[0]

    @property
    def unit_layers(self) -> int:
        """Layers of interchangeable units: one, the heads."""
        return 1

    @property
    def widths(self) -> list[int]:
        return [self.heads]

    def unit_multiplicities(self, layer: int = 0) -> torch.Tensor:
        """The heads' multiplicity buffer: (H,)."""
        return self.multiplicity

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens.unsqueeze(-1) if tokens.ndim == 2 else tokens  # (B, T, e)
        q = torch.einsum("be,hde->bhd", x[:, -1], self.query)
        k = torch.einsum("bte,hde->bhtd", x, self.key)
        v = torch.einsum("bte,hde->bhtd", x, self.value)
        attention = torch.softmax(torch.einsum("bhd,bhtd->bht", q, k) / math.sqrt(self.query.shape[1]), dim=-1)
        heads = torch.einsum("bht,bhtd->bhd", attention, v)
        return torch.einsum("bhd,hod,h->bo", heads, self.output, self.multiplicity) + self.bias

    @torch.no_grad()
    def divide_gradients(self) -> None:
        """Divide every parameter grad of head h by c_h; the shared output bias is not divided."""
        inverse = (1.0 / self.multiplicity)[:, None, None]
        for weight in (self.query, self.key, self.value, self.output):
            weight.grad.mul_(inverse)

    @torch.no_grad()
    def unit_objects(self, layer: int = 0) -> np.ndarray:
        """Each head as one object, its four weight maps flattened: (H, m), float64."""
        parts = [w.reshape(self.heads, -1) for w in (self.query, self.key, self.value, self.output)]
        return torch.cat(parts, dim=1).double().cpu().numpy()

    @torch.no_grad()
    def select_units(self, layer: int, indices: np.ndarray, multiplicities: np.ndarray) -> HeadsAttention:
        """A new layer keeping heads ``indices`` with the given multiplicities."""
        rows = torch.as_tensor(np.asarray(indices), dtype=torch.long, device=self.query.device)
        mult = torch.as_tensor(np.asarray(multiplicities), dtype=self.query.dtype, device=rows.device)
        kept = [w.detach()[rows].clone() for w in (self.query, self.key, self.value, self.output)]
        return HeadsAttention(*kept, self.bias.detach().clone(), mult)


def init_attention(
    heads: int,
    head_dim: int,
    *,
    token_dim: int = 1,
    outputs: int = 1,
    seed: int,
    init: str = "default",
    init_range: float = 1.0,
) -> HeadsAttention:
    """A float64 layer from its own generator. ``default``: nn.Linear's rule per map (query, key,
    value: U(+-1/sqrt(token_dim)); output and bias: U(+-1/sqrt(heads * head_dim))); ``uniform``:
    everything U(-init_range, init_range)."""
    generator = torch.Generator().manual_seed(seed)
    inner = 1.0 / math.sqrt(token_dim) if init == "default" else init_range
    outer = 1.0 / math.sqrt(heads * head_dim) if init == "default" else init_range

    def draw(shape: tuple[int, ...], bound: float) -> torch.Tensor:
        return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound

    maps = [draw((heads, head_dim, token_dim), inner) for _ in range(3)]
    return HeadsAttention(*maps, draw((heads, outputs, head_dim), outer), draw((outputs,), outer))
