"""Real images as flat pixel vectors in [0, 1]: scikit-learn's bundled digits (offline), and
MNIST, Fashion-MNIST and CIFAR-10 through torchvision from a local folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.dataset import Dataset, one_hot
from harness.errors import UsageError

# task name -> (torchvision class, the folder it reads under data_root, classes)
TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw", 10),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", 10),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", 10),
}


def digits_task(n_train: int, n_test: int, *, seed: int = 0) -> Dataset:
    """scikit-learn's 1797 8x8 digits (pixels / 16), split by a seeded permutation."""
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    if n_train + n_test > len(labels):
        raise UsageError(f"task.n_train + task.n_test = {n_train + n_test}: digits has only {len(labels)} images")
    order = np.random.default_rng([seed, 1]).permutation(len(labels))
    x = (images / 16.0).astype(np.float32)
    y = one_hot(labels, 10)
    train, test = order[:n_train], order[n_train : n_train + n_test]
    return Dataset("digits", x[train], y[train], x[test], y[test], classification=True)


def torchvision_task(
    name: str, n_train: int, n_test: int, *, data_root: str | Path, download: bool = False, seed: int = 0
) -> Dataset:
    """``n_train`` and ``n_test`` images drawn (seeded) from the official train and test splits."""
    import torchvision.datasets

    class_name, folder, n_classes = TORCHVISION[name]
    root = Path(data_root)
    splits = []
    for train in (True, False):
        try:
            data = getattr(torchvision.datasets, class_name)(str(root), train=train, download=download)
        except RuntimeError as exc:
            if download:
                raise UsageError(f"task.download: could not download {name} into {root}/ ({exc})") from None
            raise UsageError(
                f"task.data_root: {name} not found in {root}/ (torchvision looks for {root / folder}); "
                "set task.download: true on a machine with internet, or point task.data_root at a copy"
            ) from None
        splits.append((np.asarray(data.data), np.asarray(data.targets)))
    (train_images, train_labels), (test_images, test_labels) = splits
    picked = []
    for images, labels, n, what, stream in (
        (train_images, train_labels, n_train, "n_train", 1),
        (test_images, test_labels, n_test, "n_test", 2),
    ):
        if n > len(labels):
            raise UsageError(f"task.{what}: {n} is more than the {len(labels)} images of {name}'s split")
        rows = np.random.default_rng([seed, stream]).permutation(len(labels))[:n]
        x = images[rows].reshape(n, -1).astype(np.float32) / 255.0
        picked.append((x, one_hot(labels[rows], n_classes)))
    (x_train, y_train), (x_test, y_test) = picked
    return Dataset(name, x_train, y_train, x_test, y_test, classification=True)
