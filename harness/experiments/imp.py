"""The imp arm of the width experiment: iterative magnitude pruning with rewinding to initialisation.

Frankle & Carbin, "The Lottery Ticket Hypothesis" (ICLR 2019, arXiv:1803.03635), Algorithm 1 with
iterative pruning, at the level of units (our objects are neurons, so whole neurons are pruned,
not single weights); open_lth's lottery branch has the same structure (train a level, prune,
rewind the survivors, train the next level). Starting from the original's initial network, each
of ``compression.imp_rounds`` rounds

1. trains the survivors at their initial weights for ``Config.imp_round_steps()`` steps, with the
   run's optimiser, learning rate and schedule, batch size and batches (its own sampler, seeded as
   the run's: round 1 is the original's first steps);
2. keeps, layer by layer from the input as the magnitude arm does, the neurons of largest
   |v_j| ||w_j|| (``MLP.unit_magnitudes``) on the trained weights, so many that after round r a
   layer of d neurons keeps d (d'/d)^(r/R), and after the last exactly the moment arm's d';
3. rewinds the survivors to their initial weights.

The ticket (the last survivors at their initial weights, multiplicity 1) is then trained as the
arm's run, side by side with the other arms (harness/experiments/units.py). Pruning happens while
the arm is built, one round after another through the training loop alone (never checkpointed or
stacked), so it is a deterministic function of the configuration: a resumed or batched run
recomputes the same ticket. A round whose training loss turns NaN/inf ranks its non-finite
neurons last; the summary counts such rounds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from harness.config import Config
from harness.models import MLP
from harness.train import BatchSampler, mean_loss, predict
from harness.train.loop import Arm, SideBySide, train_one_by_one
from harness.train.losses import LossFn

# Trains a copy of the given network for one round; returns the trained copy and whether its
# training loss stayed finite.
TrainRound = Callable[[MLP], tuple[MLP, bool]]


def kept_per_round(width: int, target: int, rounds: int) -> list[int]:
    """Neurons a layer keeps after each round: width (target/width)^(r/rounds), never below
    target, exactly target after the last (geometric, as Frankle & Carbin prune a fixed
    fraction of what is left each round)."""
    kept = [max(target, round(width * (target / width) ** (r / rounds))) for r in range(1, rounds)]
    return [*kept, target]


def rewound(original: MLP, kept: Sequence[np.ndarray]) -> MLP:
    """The original's neurons ``kept[l]`` of each hidden layer at their initial weights."""
    model = original
    for layer, indices in enumerate(kept):
        model = model.select_units(layer, indices, original.unit_multiplicities(layer)[indices].cpu().numpy())
    return model


def largest(scores: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` largest scores, in increasing order (ties and NaNs as the
    magnitude arm ranks them: a stable sort of -score, NaN last)."""
    return np.sort(np.argsort(-scores, kind="stable")[:count])


def prune(original: MLP, targets: Sequence[int], rounds: int, train_round: TrainRound) -> tuple[list[np.ndarray], dict]:
    """The neurons of ``original`` each hidden layer keeps after ``rounds`` rounds of train ->
    prune -> rewind (indices into the original's layers), and the rounds' facts: optimiser steps
    are the caller's; here the neurons trained in each round and the rounds that diverged."""
    kept = [np.arange(width) for width in original.widths]
    schedule = [kept_per_round(width, target, rounds) for width, target in zip(original.widths, targets)]
    trained_neurons, diverged = [], 0
    for r in range(rounds):
        ticket = rewound(original, kept)
        trained_neurons.append(sum(ticket.widths))
        trained, finite = train_round(ticket)
        diverged += not finite
        for layer in range(original.depth):
            position = largest(trained.unit_magnitudes(layer), schedule[layer][r])
            # the next layer's incoming norms are taken over this layer's survivors, as the
            # magnitude arm takes them
            trained = trained.select_units(layer, position, np.ones(len(position)))
            kept[layer] = kept[layer][position]
    return kept, {"trained_neurons": trained_neurons, "diverged_rounds": diverged}


def round_trainer(
    config: Config,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    loss_fn: LossFn,
    batch_seed: int,
    chunk_rows: int,
    steps: int,
) -> tuple[TrainRound, list[float]]:
    """A TrainRound for ``config``'s run on (x_train, y_train), and the list it appends each
    round's training seconds to. Zero steps: the network as it is (no copy, no cast)."""
    train, device, dtype = config.train, x_train.device, x_train.dtype
    n = len(x_train)
    seconds: list[float] = []

    def evaluate(live: list[Arm]) -> dict[str, dict]:
        return {
            arm.name: {"train_loss": mean_loss(loss_fn, predict(arm.model, x_train, chunk_rows), y_train)}
            for arm in live
        }

    def train_round(model: MLP) -> tuple[MLP, bool]:
        if steps == 0:
            return model, True
        model = model.to(device=device, dtype=dtype)  # a fresh rewound copy: moved in place
        sampler = BatchSampler(np.ones(n), train.batch_size, train.sampling, batch_seed, device)
        arm = Arm("imp round", model, x_train, y_train, sampler)
        # the loss is evaluated at the start and the end only: it says whether the round diverged
        call = SideBySide([arm], dataclasses.replace(train, eval_every=steps), steps, loss_fn, evaluate, n)
        call.description = f"imp round of width {sum(model.widths)}"
        train_one_by_one(call)
        seconds.append(arm.seconds)
        final = arm.history[-1]["train_loss"] if arm.history else None
        return model, arm.status != "diverged" and final is not None and math.isfinite(final)

    return train_round, seconds


def lottery_ticket(
    original: MLP,
    targets: Sequence[int],
    config: Config,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    loss_fn: LossFn,
    batch_seed: int,
    chunk_rows: int,
) -> tuple[list[np.ndarray], dict]:
    """The imp arm's kept neurons per hidden layer (indices into ``original``; ``targets[l]`` of
    layer l, the moment arm's d' as units.unit_targets gives it) and the summary
    columns of its pruning: ``imp_rounds``, ``imp_steps`` (optimiser steps of all rounds),
    ``imp_neuron_steps`` (steps times the hidden neurons trained), ``imp_seconds`` (their
    training time, evaluation excluded) and ``imp_diverged_rounds``."""
    rounds, steps = config.compression.imp_rounds, config.imp_round_steps()
    train_round, seconds = round_trainer(config, x_train, y_train, loss_fn, batch_seed, chunk_rows, steps)
    kept, facts = prune(original, targets, rounds, train_round)
    return kept, {
        "imp_rounds": rounds,
        "imp_steps": rounds * steps,
        "imp_neuron_steps": steps * sum(facts["trained_neurons"]),
        "imp_seconds": sum(seconds),
        "imp_diverged_rounds": facts["diverged_rounds"],
    }
