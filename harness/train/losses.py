"""Per-example losses and chunked evaluation.

Regression uses the squared error averaged over outputs (so the mean over examples is
nn.MSELoss); classification the cross-entropy against target distributions (one-hot rows, or the
soft labels of k-means centroids).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from harness.models import MLP
from harness.train.stacked import EvaluationStack, shape_of

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def squared_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, out), (B, out) -> (B,)"""
    return (prediction - target).pow(2).mean(dim=-1)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, classes) logits, (B, classes) target probabilities -> (B,)"""
    return -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1)


def loss_for(classification: bool) -> LossFn:
    return cross_entropy if classification else squared_error


# Activations one evaluation chunk may hold (float32: 4 MB, about one core's L2 cache): larger
# chunks spill out of the cache and evaluate slower on a CPU.
EVAL_FLOATS = 1 << 20


def chunk_rows_for(width: int) -> int:
    """Rows per evaluation chunk for an MLP whose widest layer has ``width`` units."""
    return max(256, EVAL_FLOATS // width)


# On a GPU, chunks this many times larger than a CPU's (2^26 activations, 256 MiB in float32): a
# chunk sized for a CPU core's cache is too little work to keep a GPU busy between launches.
GPU_CHUNK_SCALE = 64


@torch.no_grad()
def predict(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk_rows: int = 8192) -> torch.Tensor:
    """The model's outputs on x, ``chunk_rows`` examples at a time (GPU_CHUNK_SCALE times as many
    on a CUDA device)."""
    if x.device.type == "cuda":
        chunk_rows *= GPU_CHUNK_SCALE
    return torch.cat([model(x[start : start + chunk_rows]) for start in range(0, len(x), chunk_rows)])


@torch.no_grad()
def predict_together(models: Sequence[torch.nn.Module], x: torch.Tensor, chunk_rows: int = 8192) -> list[torch.Tensor]:
    """Each model's outputs on x, as ``predict`` gives them (to rounding; bit for bit through the
    fused CPU kernels), with same-shape MLPs evaluated as one stack (harness/train/stacked.py,
    ``EvaluationStack``): per chunk one batched pass per layer for all of them instead of one pass
    per model, the launches a GPU waits on. Other models, and MLPs of a shape of their own, go
    through ``predict``.

    ``chunk_rows`` is what ``predict`` would be given for the widest of the models; a stack of K
    MLPs of width w takes chunk_rows * widest // (K w) rows at a time (at least one), so that a
    chunk holds as many activations as one of the widest model's, except through the fused CPU
    kernels, which hold none: chunk_rows rows.
    """
    groups: dict[object, list[int]] = {}
    for i, model in enumerate(models):
        groups.setdefault(shape_of(model) if type(model) is MLP else i, []).append(i)
    widest = max((max(model.widths) for model in models if type(model) is MLP), default=1)
    outputs: dict[int, torch.Tensor] = {}
    for members in groups.values():
        if len(members) == 1:
            outputs[members[0]] = predict(models[members[0]], x, chunk_rows)
            continue
        stack = EvaluationStack([models[i] for i in members])
        rows = chunk_rows if stack.fused else max(1, chunk_rows * widest // (len(members) * stack.width))
        together = predict(stack, x, rows)
        for k, i in enumerate(members):
            outputs[i] = together[:, k]
    return [outputs[i] for i in range(len(models))]


def mean_loss(
    loss_fn: LossFn, prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> float:
    """The (weighted) mean loss in float64: sum_i c_i l_i / sum_i c_i."""
    losses = loss_fn(prediction, target).detach().double()
    if weights is None:
        return float(losses.mean())
    weights = weights.double()
    return float((weights * losses).sum() / weights.sum())


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Share of examples whose arg-max output is the target's arg-max class."""
    return float((logits.argmax(dim=-1) == target.argmax(dim=-1)).double().mean())
