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
"""

from __future__ import annotations

import numpy as np
import torch


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
        self._order = torch.empty(0, dtype=torch.long)
        self._full = (self.weights / self.weights.sum()).to(self.device)
        # Equal weights give every batch the loss weights 1/B: made once, not per step.
        self._uniform = (
            None
            if batch_size is None
            else torch.full((batch_size,), 1.0 / batch_size, dtype=torch.float64, device=self.device)
        )

    def state(self) -> dict:
        """Where it is: its generator's state and what is left of the current epoch."""
        return {"generator": self.generator.get_state(), "order": self._order.clone()}

    def load_state(self, state: dict) -> None:
        """Go on from ``state()``."""
        self.generator.set_state(state["generator"])
        self._order = state["order"].clone()

    def next(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(indices on the device or None for the full set, loss weights (float64) summing to 1)."""
        if self.batch_size is None:
            return None, self._full
        if self.mode == "proportional":
            rows = torch.multinomial(self.weights, self.batch_size, replacement=True, generator=self.generator)
            return rows.to(self.device), self._uniform
        while len(self._order) < self.batch_size:
            self._order = torch.cat([self._order, torch.randperm(self.n, generator=self.generator)])
        rows, self._order = self._order[: self.batch_size], self._order[self.batch_size :]
        if self.equal:
            return rows.to(self.device), self._uniform
        weights = self.weights[rows]
        return rows.to(self.device), (weights / weights.sum()).to(self.device)
