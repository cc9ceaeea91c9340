"""Checks that fail on a wrong but self-consistent trainer: the device input
path's targets against the true labels, fine-tuning that ignores --init,
first_loss after a resume, one-line errors for a non-checkpoint --init and a
missing --shards folder, and transfer_check.sh's "flips only" recipe."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fractrain import data, pretrain
from fractrain.cli import main
from fractrain.config import defaults, override
from fractrain.recipe import SWITCHES

REPO = Path(__file__).resolve().parent.parent
TINY_VIT = {"patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("mode, batch", [("exact", 6), ("drop-last", 6), ("exact", 16)])
@pytest.mark.parametrize("path", ["gpu", "cpu"])
def test_input_paths_pair_each_image_with_its_true_label(tiny_dataset, mode, batch, path):
    from fractrain.inputs.cpu import ArraySource, CpuPipeline
    from fractrain.inputs.defaults import gpu_augment_class
    from fractrain.inputs.device import DevicePipeline
    from fractrain.recipe import AugmentRecipe
    from fractrain.schedule import EpochSchedule

    if path == "gpu" and gpu_augment_class() is None:
        pytest.skip("fractrain.gpu_augment is not available")
    dataset = data.load(str(tiny_dataset))
    # A relabelling that the manifest and the shards agree on would pass
    # everything else: compare with labels the test derives itself.
    true_labels = np.asarray(dataset.labels, dtype=np.int64)
    assert sorted(true_labels.tolist()) == list(range(16))
    recipe = AugmentRecipe(input_size=32, label_smoothing=0.0).without(list(SWITCHES))
    schedule = EpochSchedule(16, batch, seed=5, mode=mode)
    if path == "gpu":
        pipe = DevicePipeline(dataset.images, dataset.labels, schedule, recipe, 16, torch.device("cpu"), 5)
    else:
        pipe = CpuPipeline(ArraySource(dataset.images, dataset.labels), schedule, recipe, 16, torch.device("cpu"), 5, 0)
    steps = 7
    for step, (x, y) in zip(range(steps), pipe.batches(0, steps)):
        expected = true_labels[schedule.indices(step)]
        assert x.shape == (batch, 3, 32, 32) and y.shape == (batch, 16)
        assert torch.equal(y.argmax(1), torch.from_numpy(expected)), step
        assert torch.all(y.max(1).values == 1.0)  # one-hot: no smoothing, no mixing


def test_the_labels_are_the_classes_of_the_images(tiny_dataset):
    # 1p-frac draws class k's image from class k's parameters: two samples of
    # different labels never share an image, so a swapped label would show.
    dataset = data.load(str(tiny_dataset))
    images = dataset.images.reshape(len(dataset.labels), -1)
    assert len({images[i].tobytes() for i in range(len(images))}) == len(images)


# --- fine-tuning from --init --------------------------------------------------
@pytest.fixture(scope="module")
def pretrained(tiny_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pre") / "run"
    cfg = override(defaults("pretrain"), {
        "data.shards": str(tiny_dataset), "model.kwargs": TINY_VIT, "augment.input_size": 32, "batch_size": 8,
        "budget.epochs": None, "budget.steps": 3, "run.out": str(out), "run.workers": 0, "run.progress": False})
    pretrain.run(cfg)
    return out / "final.pt"


def images_tree(root: Path) -> Path:
    from PIL import Image

    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((16, 16), 60 * i + (label == "b") * 20, np.uint8)).save(root / label / f"{i}.png")
    return root


def test_finetune_starts_from_every_non_head_weight_of_init(pretrained, tmp_path, monkeypatch):
    from fractrain import finetune, run

    captured = {}

    def capture(job, out, existed):  # the job as the loop would receive it, before any step
        captured["model"] = {k: v.detach().clone() for k, v in job.model.state_dict().items()}
        return {}

    monkeypatch.setattr(run, "fit_in_folder", capture)
    tree = images_tree(tmp_path / "images")
    cfg = override(defaults("finetune"), {"model.init": str(pretrained), "data.train": str(tree),
                                          "data.val": str(tree), "augment.input_size": 32, "batch_size": 4,
                                          "run.out": str(tmp_path / "ft"), "run.workers": 0, "run.progress": False})
    finetune.run(cfg)
    start = torch.load(pretrained, weights_only=True)["model"]
    loaded = captured["model"]
    backbone = [k for k in start if not k.startswith("head.")]
    assert len(backbone) > 10 and set(backbone) <= set(loaded)
    for key in backbone:
        assert torch.equal(loaded[key], start[key]), key
    assert loaded["head.weight"].shape == (2, 64)  # a new head for the 2 classes

    # --scratch: the same path, random weights (so the comparison above can fail).
    finetune.run(override(cfg, {"model.scratch": True, "run.out": str(tmp_path / "scratch")}))
    assert not torch.equal(captured["model"]["blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])


def test_init_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys):
    tree = images_tree(tmp_path / "images")
    for name, payload in (("text.pt", b"hello, not a checkpoint\n"), ("random.pt", bytes(range(256)) * 8)):
        bad = tmp_path / name
        bad.write_bytes(payload)
        assert main(["finetune", "--init", str(bad), "--train", str(tree), "--val", str(tree),
                     "--out", str(tmp_path / "ft")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {bad} is not a fractrain checkpoint"), err
        assert not (tmp_path / "ft").exists()


def test_missing_shards_folder_says_it_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "no" / "such"
    assert main(["--shards", str(missing), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --shards {missing} does not exist\n"
    (tmp_path / "file").write_text("x")
    assert main(["--shards", str(tmp_path / "file"), "--out", str(tmp_path / "run")]) == 2
    assert "is not a directory" in capsys.readouterr().err


# --- first_loss after a resume ---------------------------------------------------
def test_first_loss_after_a_resume_is_the_runs_first(tiny_dataset, tmp_path):
    def config(out):
        return override(defaults("pretrain"), {
            "data.shards": str(tiny_dataset), "model.kwargs": TINY_VIT, "augment.input_size": 32, "batch_size": 8,
            "budget.epochs": None, "budget.steps": 8, "run.out": str(out), "run.workers": 0, "run.progress": False,
            "run.log_every": 2, "run.ckpt_every": 2.0})

    whole = pretrain.run(config(tmp_path / "whole"))

    def kill_at_6(step):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain.run(config(tmp_path / "cut"), on_step=kill_at_6)
    resumed = pretrain.run(config(tmp_path / "cut"), resume="auto")
    assert resumed["resumed_from_step"] == 4
    assert resumed["first_loss"] == whole["first_loss"]
    first_record = json.loads((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()[0])
    assert first_record["step"] == 1 and resumed["first_loss"] == first_record["loss"]
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["first_loss"] == whole["first_loss"]


# --- transfer_check.sh's "flips only" ------------------------------------------------
def test_transfer_checks_flips_only_recipe_has_nothing_but_flips():
    from fractrain.inputs.cpu import train_transform
    from fractrain.recipe import AugmentRecipe

    script = (REPO / "benchmarks" / "transfer_check.sh").read_text()
    light = re.search(r"^LIGHT=([\w,-]+)", script, re.M).group(1).split(",")
    assert '--aug-off "$LIGHT"' in script
    recipe = AugmentRecipe(input_size=32).without(light)
    assert recipe.hflip == 0.5 and recipe.vflip == 0.5
    assert recipe.auto_augment is None and recipe.color_jitter == 0.0 and recipe.reprob == 0.0
    assert not recipe.mixes and not recipe.crop
    # What timm builds from it: a resize, the flips, ToTensor, Normalize; no
    # colour jitter (which timm turns on as soon as RandAugment is off).
    names = [type(t).__name__ for t in train_transform(recipe).transforms]
    assert not any("Jitter" in n or "Augment" in n or "Erasing" in n for n in names), names
    assert "RandomHorizontalFlip" in names and "RandomVerticalFlip" in names
