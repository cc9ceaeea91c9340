"""CIFAR-10/100 in torchvision's on-disk layout (python pickles), written
here in miniature: never downloaded."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fractrain.downstream import open_pair, open_source
from fractrain.errors import UserError


def write_batch(path, images: np.ndarray, labels: list[int], label_key: str) -> None:
    """images uint8 (N, 32, 32, 3) stored as CIFAR does: rows of R, G, B planes."""
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    with open(path, "wb") as handle:
        pickle.dump({"data": rows, label_key: labels, "batch_label": "test"}, handle)


def images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


@pytest.fixture
def cifar10(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    expected = {"train": ([], []), "test": ([], [])}
    for i in range(1, 6):
        batch, labels = images(3, i), [(i + k) % 10 for k in range(3)]
        write_batch(folder / f"data_batch_{i}", batch, labels, "labels")
        expected["train"][0].append(batch)
        expected["train"][1].extend(labels)
    test, test_labels = images(4, 9), [9, 0, 1, 2]
    write_batch(folder / "test_batch", test, test_labels, "labels")
    expected["test"] = ([test], test_labels)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"name{c}" for c in range(10)]}, handle)
    return tmp_path, expected


def test_cifar10_splits_pixels_labels_and_names(cifar10):
    root, expected = cifar10
    pair = open_pair(f"cifar10:{root}", f"cifar10:{root}")
    assert len(pair.train) == 15 and len(pair.val) == 4 and pair.num_classes == 10
    assert pair.train.labels.tolist() == expected["train"][1] and pair.val.labels.tolist() == expected["test"][1]
    train_images = np.concatenate(expected["train"][0])
    for index in (0, 7, 14):
        assert np.array_equal(np.asarray(pair.train.image(index)), train_images[index])  # same pixels, RGB
    assert np.array_equal(np.asarray(pair.val.image(3)), expected["test"][0][0][3])
    assert pair.train.classes[3] == "name3"
    # The folder itself works too.
    assert len(open_source(f"cifar10:{root / 'cifar-10-batches-py'}", "test")) == 4


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    write_batch(folder / "train", images(6, 1), [0, 99, 5, 5, 42, 7], "fine_labels")
    write_batch(folder / "test", images(2, 2), [99, 0], "fine_labels")
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"c{c}" for c in range(100)]}, handle)
    pair = open_pair(f"cifar100:{tmp_path}", f"cifar100:{tmp_path}")
    assert pair.num_classes == 100 and pair.train.labels.tolist() == [0, 99, 5, 5, 42, 7]
    assert pair.val.labels.tolist() == [99, 0]


def test_cifar_errors_are_user_errors(tmp_path, cifar10):
    root, _ = cifar10
    with pytest.raises(UserError, match="no cifar-100-python folder there"):
        open_source(f"cifar100:{tmp_path / 'nowhere'}")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3 is missing"):
        open_source(f"cifar10:{root}")
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="test_batch is not a cifar10 batch"):
        open_source(f"cifar10:{root}", "test")


@pytest.mark.usefixtures("one_torch_thread")
def test_finetune_runs_on_cifar_folders(cifar10, tmp_path):
    import json

    from fractrain.cli import main

    root, _ = cifar10
    out = tmp_path / "ft"
    assert main(["finetune", "--scratch", "--model", "vit_tiny", "--input-size", "32", "--model-arg", "patch_size=8",
                 "--model-arg", "depth=1", "--model-arg", "embed_dim=32", "--model-arg", "num_heads=2",
                 "--train", f"cifar10:{root}", "--val", f"cifar10:{root}", "-b", "4", "--steps", "2",
                 "--workers", "0", "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["train"] == f"cifar10:{root}" and 0.0 <= summary["best_top1"] <= 1.0
