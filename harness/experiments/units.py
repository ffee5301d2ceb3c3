"""Width compression (SPEC 4), shared by the width (MLP neurons) and attention (heads) experiments.

One initial network; each compressed arm keeps some of its units, chosen at initialisation:

- ``moment``: moment compression of the units (objects: a neuron's incoming row, bias and outgoing
  column; a head's four maps), multiplicities = the compression's weights;
- ``random``: d' units chosen uniformly, multiplicity 1 (the paper's naive);
- ``magnitude``: the d' units of largest ||incoming|| * ||outgoing|| (|v| ||w||), multiplicity 1;
- ``imp`` (MLP neurons only): iterative magnitude pruning with rewinding, Frankle & Carbin: rounds
  of training from initialisation, each keeping the neurons of largest |v| ||w|| after training,
  down to d'; the survivors at their initial weights, multiplicity 1 (harness/experiments/imp.py).

d' comes from ``compression.size`` as compress() reads it (raised to N(m, k); at most d), so all
compressed arms have the same budget. Deep MLPs are compressed layer by layer from the input: the
objects of layer l are taken after layer l-1 is compressed (their incoming rows have only the kept
columns), so each layer's moment matching sees the function it feeds. When N(m, k) >= d a layer
cannot be compressed (m grows with the next layer's width) and is kept whole; the summary says so.

All arms, and the original as a reference, train side by side from one sampler: the same index
sequence for everyone. Records of every compressed arm carry ``train_gap`` and ``test_gap``
(|L_arm - L_original| / L_original) and ``max_output_diff`` (max |f_arm - f_original| on the test
set). A compressed arm run alone still trains the original alongside for these.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from harness.compression import compress, n_moments, parse_size, raw_moments, relative_moment_error
from harness.config import CompressionConfig, Config
from harness.data import Dataset
from harness.errors import warn_once
from harness.experiments import imp
from harness.experiments.common import ArmResult, OnRecord, Seeds, dtype_of, final_summary, moment_options, tensor
from harness.train import Arm, BatchSampler, accuracy, loss_for, mean_loss, predict_together, train_side_by_side


def budget(d: int, m: int, k: int, size) -> int:
    """d' for d units of dimension m: the size rule raised to N(m, k) (as compress does), at most d."""
    return min(d, max(_wanted(d, m, k, size), n_moments(m, k)))


def _wanted(d: int, m: int, k: int, size) -> int:
    return n_moments(m, k) if size is None else parse_size(size).resolve(d)


def unit_targets(model, compression: CompressionConfig) -> list[int]:
    """d' of each hidden layer of an MLP as ``compress_units`` compresses them in turn: layer l's
    objects are its incoming row over layer l-1's kept neurons, its bias and its outgoing column."""
    targets = []
    for layer in range(model.depth):
        inputs = model.weights[0].shape[1] if layer == 0 else targets[-1]
        m = inputs + 1 + model.weights[layer + 1].shape[0]
        targets.append(budget(model.widths[layer], m, compression.k, compression.size))
    return targets


def compress_units(
    model, arm: str, compression: CompressionConfig, seed: int, device: torch.device, kept: list | None = None
):
    """(the compressed model, its facts: width_eff per layer, compress_seconds, moment_error, clamped).

    ``kept``: for the imp arm, the indices each layer keeps (imp.lottery_ticket)."""
    widths, seconds, errors, whole, clamped, oversized = [], 0.0, [], [], False, []
    k = compression.k
    for layer in range(model.unit_layers):
        objects = model.unit_objects(layer)
        weights = model.unit_multiplicities(layer).double().cpu().numpy()
        d, m = objects.shape
        wanted, target = _wanted(d, m, k, compression.size), budget(d, m, k, compression.size)
        if wanted > d:
            oversized.append(f"layer {layer}: {wanted} of {d}")
        if wanted < min(d, n_moments(m, k)):
            clamped = True
            raised = "the layer is kept whole" if target >= d else f"raised to {target}"
            warnings.warn(
                f"layer {layer}: size {compression.size} gives {wanted} of {d} units, below "
                f"N(m={m}, k={k}) = {n_moments(m, k)}: {raised}",
                stacklevel=2,
            )
        if target >= d:
            indices, multiplicities = np.arange(d), weights
            whole.append(layer)
        elif arm == "moment":
            points = torch.as_tensor(objects, device=device)
            options = moment_options(arm, compression)
            result = compress(points, weights, k=k, size=target, method=compression.method, seed=seed, **options)
            indices, multiplicities, seconds = result.indices, result.weights, seconds + result.seconds
        elif arm == "random":
            result = compress(objects, weights, k=k, size=target, method="random", seed=seed)
            indices, multiplicities, seconds = result.indices, np.ones(target), seconds + result.seconds
        elif arm == "magnitude":
            indices = np.sort(np.argsort(-model.unit_magnitudes(layer), kind="stable")[:target])
            multiplicities = np.ones(target)
        elif arm == "imp":
            indices, multiplicities = kept[layer], np.ones(len(kept[layer]))
        else:
            raise ValueError(f"unknown width arm {arm!r}")
        errors.append(
            relative_moment_error(raw_moments(objects, weights, k), raw_moments(objects[indices], multiplicities, k))
        )
        model = model.select_units(layer, indices, multiplicities)
        widths.append(len(indices))
    if len(oversized) == len(widths):
        warn_once(
            f"size {compression.size} asks for more units than every layer has ({', '.join(oversized)}): "
            "every unit is kept",
            stacklevel=2,
        )
    facts = {
        "width_eff": max(widths),
        "width_eff_layers": ",".join(map(str, widths)),
        "compress_seconds": seconds,
        "moment_error": max(errors),
        "uncompressed_layers": ",".join(map(str, whole)),
        "clamped": clamped,
    }
    return model, facts


def run_units(
    config: Config,
    data: Dataset,
    original,
    arms: tuple[str, ...],
    device: torch.device,
    on_record: OnRecord | None,
    chunk_rows: int,
) -> dict[str, ArmResult]:
    """Compress ``original``'s units for each compressed arm, train all side by side, compare."""
    seeds, dtype = Seeds.of(config), dtype_of(config)
    names = ("original",) + tuple(arm for arm in arms if arm != "original")
    models = {"original": original}
    facts = {
        "original": {
            "width_eff": max(original.widths),
            "width_eff_layers": ",".join(map(str, original.widths)),
            "compress_seconds": None,
            "moment_error": None,
            "uncompressed_layers": None,
            "clamped": None,
        }
    }
    x_train, y_train = tensor(data.x_train, device, dtype), tensor(data.y_train, device, dtype)
    x_test, y_test = tensor(data.x_test, device, dtype), tensor(data.y_test, device, dtype)
    loss_fn = loss_for(data.classification)
    for arm in names[1:]:
        kept, pruning = None, {}
        if arm == "imp":
            targets = unit_targets(original, config.compression)
            kept, pruning = imp.lottery_ticket(
                original, targets, config, x_train, y_train, loss_fn, seeds.batches, chunk_rows
            )
        models[arm], facts[arm] = compress_units(original, arm, config.compression, seeds.compression, device, kept)
        facts[arm].update(pruning)

    n = len(x_train)
    sampler = BatchSampler(np.ones(n), config.train.batch_size, config.train.sampling, seeds.batches, device)
    trained = [Arm(name, models[name].to(device=device, dtype=dtype), x_train, y_train, sampler) for name in names]

    def evaluate(live: list[Arm]) -> dict[str, dict]:
        models = [arm.model for arm in live]  # the same inputs for all: same-shape arms evaluated as one stack
        each = zip(predict_together(models, x_train, chunk_rows), predict_together(models, x_test, chunk_rows))
        outputs = {arm.name: out for arm, out in zip(live, each)}
        records = {}
        for name, (train_out, test_out) in outputs.items():
            records[name] = {
                "train_loss": mean_loss(loss_fn, train_out, y_train),
                "test_loss": mean_loss(loss_fn, test_out, y_test),
            }
            if data.classification:
                records[name]["test_accuracy"] = accuracy(test_out, y_test)
        reference = records.get("original")
        for name in records:
            if name == "original":
                continue
            if reference is None:
                records[name].update(train_gap=None, test_gap=None, max_output_diff=None)
                continue
            records[name]["train_gap"] = _gap(records[name]["train_loss"], reference["train_loss"])
            records[name]["test_gap"] = _gap(records[name]["test_loss"], reference["test_loss"])
            records[name]["max_output_diff"] = float((outputs[name][1] - outputs["original"][1]).abs().max())
        return records

    report = None if on_record is None else (lambda arm, record: on_record(arm, record) if arm in arms else None)
    train_side_by_side(
        trained,
        config.train,
        config.total_steps(),
        loss_fn,
        evaluate,
        epoch_size=n,
        on_record=report,
        description=f"{config.experiment} {'/'.join(names)}",
    )
    results = {}
    for arm in trained:
        if arm.name not in arms:
            continue
        summary = {
            "d": n,
            "d_eff": n,
            "width": max(original.widths),
            "k": None if arm.name == "original" else config.compression.k,
            "train_seconds": arm.seconds,
            **facts[arm.name],
            **final_summary(arm.history),
        }
        if arm.name != "original":
            summary.update(_gap_summary(arm.history))
        results[arm.name] = ArmResult(arm.name, arm.status, arm.history, summary)
    return results


def _gap(value: float, reference: float) -> float:
    return abs(value - reference) / reference if reference else float("inf")


def _gap_summary(history: list[dict]) -> dict:
    """The largest gaps over the trajectory, and the last output difference."""

    def largest(key: str):
        values = [r[key] for r in history if r.get(key) is not None]
        return max(values) if values else None

    return {
        "max_train_gap": largest("train_gap"),
        "max_test_gap": largest("test_gap"),
        "max_output_diff": history[-1].get("max_output_diff") if history else None,
    }
