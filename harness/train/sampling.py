"""Batches of a weighted training set, from an explicit generator (the global seed plays no part).

Each batch is (indices, loss weights): the batch loss is sum_b lw_b * loss(example b), with the loss
weights summing to 1, so that every mode estimates the weighted mean sum_i c_i l_i / sum_i c_i
(SPEC 5):

- full batch (``batch_size`` None): every example, lw = c / sum(c): the exact weighted mean;
- ``proportional``: B i.i.d. draws with probability c_i / sum(c), lw = 1/B (the authors' choice);
- ``weighted_loss``: shuffled epochs, lw = c_b / sum_batch(c).

A set whose weights are all equal (an original dataset, or a uniform random subset) gets shuffled
epochs in either mode, as a DataLoader with shuffle=True would: the modes then differ only in
drawing with or without replacement, and without is the standard. Epochs run back to back: a batch
may straddle two permutations.

Indices are drawn on the host from the sampler's own generator (so a run draws the same batches
on any device), a block at a time: a whole permutation or, for ``proportional`` on a CUDA device,
about an epoch of batches in one multinomial draw (the same indices as one draw per batch: with
replacement, torch draws the samples one after another from the generator). Each block goes to a
CUDA device in one non-blocking copy from pinned memory, and a step's batch is a slice of the
device copy: no host-to-device copy per sampler per step. On a CPU there is no copy to save and a
proportional block is one batch (a larger draw costs as much per index: docs/performance.md).
"""

from __future__ import annotations

import numpy as np
import torch


def batches_per_draw(n: int, batch_size: int | None, device: torch.device) -> int:
    """Proportional batches drawn in one multinomial call: about an epoch's on a CUDA device, one on
    a CPU, and one for batches of one example (torch draws a single sample another way, so a block
    of them would be other indices)."""
    if batch_size is None or batch_size < 2 or device.type == "cpu":
        return 1
    return max(1, -(-n // batch_size))


class BatchSampler:
    """An endless sequence of batches over n examples with weights c (any positive scale)."""

    def __init__(
        self, weights, batch_size: int | None, mode: str, seed: int, device: torch.device | str = "cpu"
    ) -> None:
        if mode not in ("proportional", "weighted_loss"):
            raise ValueError(f"sampling mode must be proportional or weighted_loss; got {mode!r}")
        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self.n = len(self.weights)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.equal = bool((self.weights == self.weights[0]).all())
        self.mode = "weighted_loss" if self.equal else mode
        self.generator = torch.Generator().manual_seed(seed)
        self._block = batches_per_draw(self.n, batch_size, self.device)
        self._order = torch.empty(0, dtype=torch.long)  # the indices drawn and not yet used
        self._on_device = self._order.to(self.device)  # the same, where the batches are used
        self._full = (self.weights / self.weights.sum()).to(self.device)
        self._device_weights = self.weights.to(self.device)
        # Equal weights give every batch the loss weights 1/B: made once, not per step.
        self._uniform = (
            None
            if batch_size is None
            else torch.full((batch_size,), 1.0 / batch_size, dtype=torch.float64, device=self.device)
        )

    def state(self) -> dict:
        """Where it is: its generator's state and the indices drawn and not yet used."""
        return {"generator": self.generator.get_state(), "order": self._order.clone()}

    def load_state(self, state: dict) -> None:
        """Go on from ``state()``."""
        self.generator.set_state(state["generator"])
        self._order = state["order"].clone()
        self._on_device = self._order.to(self.device)

    def next(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(indices on the device or None for the full set, loss weights (float64) summing to 1)."""
        if self.batch_size is None:
            return None, self._full
        while len(self._order) < self.batch_size:
            self._append(self._draw())
        rows = self._on_device[: self.batch_size]
        self._order, self._on_device = self._order[self.batch_size :], self._on_device[self.batch_size :]
        if self.equal or self.mode == "proportional":
            return rows, self._uniform
        weights = self._device_weights[rows]
        return rows, weights / weights.sum()

    def _draw(self) -> torch.Tensor:
        """The next block of indices from the generator, on the host."""
        if self.mode == "proportional":
            count = self._block * self.batch_size
            return torch.multinomial(self.weights, count, replacement=True, generator=self.generator)
        return torch.randperm(self.n, generator=self.generator)

    def _append(self, rows: torch.Tensor) -> None:
        self._order = torch.cat([self._order, rows])
        if self.device.type == "cpu":
            self._on_device = self._order
            return
        # Pinned host memory lets the copy run asynchronously; torch's pinned-memory cache keeps
        # the block until the copy has run.
        copied = rows.pin_memory().to(self.device, non_blocking=True)
        self._on_device = torch.cat([self._on_device, copied])
