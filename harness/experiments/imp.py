"""The imp arm of the width experiment: iterative magnitude pruning with rewinding to initialisation.

Frankle & Carbin, "The Lottery Ticket Hypothesis" (ICLR 2019, arXiv:1803.03635), iterative
pruning with resetting to the initial weights, at the level of units (our objects are neurons, so
whole neurons are pruned, not single weights). open_lth's ``lottery`` runner (and the branches that
retrain its levels) has the same structure: each level trains for the full ``training_steps``,
prunes a fixed ``pruning_fraction`` of what is left and rewinds to ``rewinding_steps`` (0: the
initialisation). Starting from the original's initial network, each of ``compression.imp_rounds``
rounds

1. trains the survivors at their initial weights for ``Config.imp_round_steps()`` steps, with the
   run's optimiser, learning rate and schedule, batch size and batches (its own sampler, seeded as
   the run's: round 1 is the original's first steps);
2. keeps, layer by layer from the input as the magnitude arm does, the neurons of largest
   |v_j| ||w_j|| (``MLP.unit_magnitudes``) on the trained weights, so many that after round r a
   layer of d neurons keeps d (d'/d)^(r/R), and after the last exactly the moment arm's d';
3. rewinds the survivors to their initial weights.

The ticket (the last survivors at their initial weights, multiplicity 1) is then trained as the
arm's run, side by side with the other arms (harness/experiments/units.py). Pruning happens while
the arm is built, before that training, each round trained as a stack of one model
(harness/train/batched.py, whether or not the run is inside ``run_together``), so the ticket is
one deterministic function of the configuration in both paths. In a recorded
run each round checkpoints into the imp run's checkpoint folder (its stage ``imp-round-<r>``) and
saves its survivors when done: a stopped run goes on from the round it was in, and a finished
round is never trained again. A round whose training loss turns NaN/inf ranks its non-finite
neurons last; the summary counts such rounds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from harness.config import Config
from harness.models import MLP
from harness.train import BatchSampler, checkpoint, mean_loss, predict
from harness.train.batched import train_together
from harness.train.loop import Arm, SideBySide, with_checkpoints
from harness.train.losses import LossFn

ROUND_ARM = "imp round"  # the arm name of a pruning round's training call
# Trains the network of round r (from 0) and returns it trained, whether its training loss stayed
# finite, and the seconds its steps took.
TrainRound = Callable[[int, MLP], tuple[MLP, bool, float]]
# Round r's saved state (None: not finished, or not saved), and the saver of a finished round's.
Finished = Callable[[int], dict | None]
Finish = Callable[[int, dict], None]


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


def prune(
    original: MLP,
    targets: Sequence[int],
    rounds: int,
    train_round: TrainRound,
    finished: Finished = lambda r: None,
    finish: Finish = lambda r, state: None,
) -> tuple[list[np.ndarray], dict]:
    """The neurons of ``original`` each hidden layer keeps after ``rounds`` rounds of train ->
    prune -> rewind (indices into the original's layers, ``targets[l]`` of layer l), and the
    rounds' facts: the hidden neurons trained in each round, its seconds, and how many diverged.
    Rounds that ``finished`` has are taken from it; each round trained is handed to ``finish``.
    A network whose every layer is kept whole trains no round."""
    state = {
        "kept": [torch.arange(width) for width in original.widths],
        "trained_neurons": [],
        "seconds": [],
        "diverged_rounds": 0,
    }
    schedule = [kept_per_round(width, target, rounds) for width, target in zip(original.widths, targets)]
    if all(target >= width for width, target in zip(original.widths, targets)):
        rounds = 0  # every layer is kept whole: nothing to prune, no round to train
    for r in range(rounds):
        if (saved := finished(r)) is not None:
            state = saved
            continue
        kept = [indices.numpy() for indices in state["kept"]]
        ticket = rewound(original, kept)
        trained, finite, seconds = train_round(r, ticket)
        for layer in range(original.depth):
            position = largest(trained.unit_magnitudes(layer), schedule[layer][r])
            # the next layer's incoming norms are taken over this layer's survivors, as the
            # magnitude arm takes them
            trained = trained.select_units(layer, position, np.ones(len(position)))
            kept[layer] = kept[layer][position]
        state = {
            "kept": [torch.from_numpy(indices) for indices in kept],
            "trained_neurons": [*state["trained_neurons"], sum(ticket.widths)],
            "seconds": [*state["seconds"], seconds],
            "diverged_rounds": state["diverged_rounds"] + (not finite),
        }
        finish(r, state)
    facts = {key: value for key, value in state.items() if key != "kept"}
    return [indices.numpy() for indices in state["kept"]], facts


def round_trainer(
    config: Config,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    loss_fn: LossFn,
    batch_seed: int,
    chunk_rows: int,
    steps: int,
    stage: Callable[[int], checkpoint.Target | None] = lambda r: None,
) -> TrainRound:
    """A TrainRound for ``config``'s run on (x_train, y_train); round r checkpoints into
    ``stage(r)`` (None: nowhere). Zero steps: the network as it is (no copy, no cast)."""
    train, device, dtype = config.train, x_train.device, x_train.dtype
    n = len(x_train)

    def evaluate(live: list[Arm]) -> dict[str, dict]:
        return {
            arm.name: {"train_loss": mean_loss(loss_fn, predict(arm.model, x_train, chunk_rows), y_train)}
            for arm in live
        }

    def train_round(r: int, model: MLP) -> tuple[MLP, bool, float]:
        if steps == 0:
            return model, True, 0.0
        model = model.to(device=device, dtype=dtype)  # a fresh rewound copy: moved in place
        sampler = BatchSampler(np.ones(n), train.batch_size, train.sampling, batch_seed, device)
        arm = Arm(ROUND_ARM, model, x_train, y_train, sampler)
        target = stage(r)
        # the loss is evaluated at the start and the end only: it says whether the round diverged
        call = SideBySide([arm], dataclasses.replace(train, eval_every=steps), steps, loss_fn, evaluate, n)
        call.description = f"imp round {r + 1} of width {sum(model.widths)}"
        with checkpoint.writing_to(target) if target is not None else contextlib.nullcontext():
            call = with_checkpoints(call)
        # a stack of its own (the fused kernels where they apply, as a sweep's batched training)
        train_together([call])
        final = arm.history[-1]["train_loss"] if arm.history else None
        return model, arm.status != "diverged" and final is not None and math.isfinite(final), arm.seconds

    return train_round


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
    layer l, the moment arm's d' as units.unit_targets gives it) and the summary columns of its
    pruning: ``imp_steps`` (optimiser steps of all rounds: none where every layer is kept
    whole), ``imp_neuron_steps`` (steps times the hidden neurons trained), ``imp_seconds`` (their
    training time, evaluation excluded) and ``imp_diverged_rounds``. Inside
    ``checkpoint.writing_to`` (a recorded run) the rounds checkpoint into the imp run's folder and
    a resumed run goes on from them."""
    rounds, steps = config.compression.imp_rounds, config.imp_round_steps()
    run = checkpoint.current()

    def stage(r: int) -> checkpoint.Target | None:
        if run is None:
            return None
        return checkpoint.Target(
            run.out, {ROUND_ARM: run.runs["imp"]}, run.every, run.seconds, run.resume, stage=f"imp-round-{r + 1}"
        )

    def finished(r: int) -> dict | None:
        return None if run is None else checkpoint.saved_result(stage(r))

    def finish(r: int, state: dict) -> None:
        if run is not None:
            checkpoint.save_result(stage(r), state)

    train_round = round_trainer(config, x_train, y_train, loss_fn, batch_seed, chunk_rows, steps, stage)
    kept, facts = prune(original, targets, rounds, train_round, finished, finish)
    return kept, {
        "imp_steps": steps * len(facts["trained_neurons"]),
        "imp_neuron_steps": steps * sum(facts["trained_neurons"]),
        "imp_seconds": sum(facts["seconds"]),
        "imp_diverged_rounds": facts["diverged_rounds"],
    }
