"""fractrain pre-trains on the other kinds unchanged: a few steps on tiny
builds of a category-major kind (several images per class), a contour kind
and an RGB real-image set."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pretrain = pytest.importorskip("fractrain.pretrain")
config = pytest.importorskip("fractrain.config")

from fracbuild.build import BuildSpec, run_build  # noqa: E402

TINY_VIT = {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rgb_photo(path) -> str:
    y, x = np.mgrid[0:48, 0:48]
    image = np.stack([x * 5, y * 5, (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    Image.fromarray(image).save(path)
    return str(path)


@pytest.mark.parametrize("kind", ["fractaldb", "visualatom", "real-image"])
def test_fractrain_pretrains_on_the_kind(kind, tmp_path):
    params = {
        "fractaldb": {"num_categories": 2, "repeats": 1, "instances": 4, "size": 32, "pad": 2, "iterations": 1500,
                      "search_size": 64, "search_iterations": 3000},
        "visualatom": {"num_categories": 3, "instances": 2, "size": 32},
        "real-image": {"num_classes": 4, "size": 32, "edges": "none", "image": rgb_photo(tmp_path / "p.png")},
    }[kind]
    shards = tmp_path / "shards"
    manifest = run_build(BuildSpec(kind=kind, seed=0, params=params, prefix=kind, shard_size=4), str(shards),
                         workers=1, progress=False, log=lambda m: None)
    cfg = config.override(config.defaults("pretrain"), {
        "data.shards": str(shards), "model.kwargs": TINY_VIT, "augment.input_size": 32, "batch_size": 4,
        "budget.epochs": None, "budget.steps": 2, "run.out": str(tmp_path / "run"), "run.workers": 0,
        "run.progress": False, "run.log_every": 1, "run.ckpt_every": 2.0})
    summary = pretrain.run(cfg)
    assert summary["steps"] == 2 and np.isfinite(summary["last_loss"])
    assert summary["num_classes"] == manifest["num_classes"] and summary["num_samples"] == manifest["num_samples"]
