"""torch.optim's update rules over stacked parameters (K, ...), with one learning rate per model.

The shared hyperparameters (betas, eps, weight decay, momentum, RMSprop's alpha, Rprop's etas and
step-size bounds) are read from the optimizer ``make_optimizer`` builds for the configuration, so
they cannot drift from the one-at-a-time path. Each rule repeats torch.optim's single-tensor
update line for line (maximize, amsgrad, nesterov, dampening and centered are off, as
``make_optimizer`` leaves them), the learning rate being a (K,) tensor broadcast over the model
axis. tests/test_train_batched.py checks every rule against torch.optim.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from harness.config import TrainConfig
from harness.train.optim import make_optimizer

_OFF = {"maximize": False, "amsgrad": False, "nesterov": False, "dampening": 0, "centered": False}


def _per_model(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) float64 -> like's dtype, shaped to broadcast over a (K, ...) parameter."""
    return values.to(like.dtype).view(-1, *[1] * (like.dim() - 1))


def _sgd(p, g, state, lrs, step, h) -> None:
    if h["weight_decay"] != 0:
        g = g.add(p, alpha=h["weight_decay"])
    if h["momentum"] != 0:
        if "momentum" not in state:
            state["momentum"] = g.clone()
        else:
            state["momentum"].mul_(h["momentum"]).add_(g)
        g = state["momentum"]
    p.add_(_per_model(-lrs, p) * g)


def _adam(p, g, state, lrs, step, h, decoupled: bool = False) -> None:
    beta1, beta2 = h["betas"]
    if h["weight_decay"] != 0:
        if decoupled:
            p.mul_(_per_model(1 - lrs * h["weight_decay"], p))
        else:
            g = g.add(p, alpha=h["weight_decay"])
    m = state.setdefault("exp_avg", torch.zeros_like(p))
    v = state.setdefault("exp_avg_sq", torch.zeros_like(p))
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = (v.sqrt() / (1 - beta2**step) ** 0.5).add_(h["eps"])
    p.add_(_per_model(-(lrs / (1 - beta1**step)), p) * m / denom)


def _adamw(p, g, state, lrs, step, h) -> None:
    _adam(p, g, state, lrs, step, h, decoupled=True)


def _adamax(p, g, state, lrs, step, h) -> None:
    beta1, beta2 = h["betas"]
    if h["weight_decay"] != 0:
        g = g.add(p, alpha=h["weight_decay"])
    m = state.setdefault("exp_avg", torch.zeros_like(p))
    u = state.setdefault("exp_inf", torch.zeros_like(p))
    m.lerp_(g, 1 - beta1)
    torch.maximum(u.mul_(beta2), g.abs().add_(h["eps"]), out=u)
    p.add_(_per_model(-(lrs / (1 - beta1**step)), p) * m / u)


def _rmsprop(p, g, state, lrs, step, h) -> None:
    if h["weight_decay"] != 0:
        g = g.add(p, alpha=h["weight_decay"])
    v = state.setdefault("square_avg", torch.zeros_like(p))
    v.mul_(h["alpha"]).addcmul_(g, g, value=1 - h["alpha"])
    avg = v.sqrt().add_(h["eps"])
    if h["momentum"] > 0:
        buf = state.setdefault("momentum", torch.zeros_like(p))
        buf.mul_(h["momentum"]).addcdiv_(g, avg)
        p.add_(_per_model(-lrs, p) * buf)
    else:
        p.add_(_per_model(-lrs, p) * g / avg)


def _rprop(p, g, state, lrs, step, h) -> None:
    """Rprop reads the learning rate once, as every weight's first step size."""
    etaminus, etaplus = h["etas"]
    low, high = h["step_sizes"]
    prev = state.setdefault("prev", torch.zeros_like(p))
    if "step_size" not in state:
        state["step_size"] = _per_model(lrs, p).expand_as(p).clone()
    sign = g.mul(prev).sign()
    sign[sign.gt(0)] = etaplus
    sign[sign.lt(0)] = etaminus
    sign[sign.eq(0)] = 1
    state["step_size"].mul_(sign).clamp_(low, high)
    g = g.clone()
    g[sign.eq(etaminus)] = 0
    p.addcmul_(g.sign(), state["step_size"], value=-1)
    prev.copy_(g)


Rule = Callable[..., None]
RULES: dict[str, Rule] = {
    "SGD": _sgd,
    "Adam": _adam,
    "AdamW": _adamw,
    "Adamax": _adamax,
    "RMSprop": _rmsprop,
    "Rprop": _rprop,
}


class StackedOptimizer:
    """The configured optimizer over stacked parameters; ``step(lrs)`` takes each model's lr."""

    def __init__(self, params: Sequence[torch.Tensor], train: TrainConfig) -> None:
        reference = make_optimizer([torch.zeros(1, requires_grad=True)], train)
        self.rule = RULES[type(reference).__name__]
        self.hyper = reference.param_groups[0]
        for key, off in _OFF.items():
            if self.hyper.get(key, off) != off:
                raise ValueError(f"stacked {type(reference).__name__}: {key}={self.hyper[key]!r} is not supported")
        self.params = list(params)
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in self.params]
        self.steps = 0

    @torch.no_grad()
    def step(self, lrs: torch.Tensor) -> None:
        """One update of every model; ``lrs``: (K,) float64, this step's learning rate of each."""
        self.steps += 1
        for p, state in zip(self.params, self.state):
            self.rule(p, p.grad, state, lrs, self.steps, self.hyper)

    def keep(self, rows: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        """Go on with models ``rows`` only, whose parameters are now ``params``."""
        self.params = list(params)
        self.state = [{key: value[rows] for key, value in state.items()} for state in self.state]
