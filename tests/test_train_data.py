"""fractrain's data side: the exact-epoch schedule, shard verification, the
CPU input path across ranks and workers, and the Pillow 13 posterize trap."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from conftest import as_version_1
from fracbuild.shards import read_shard
from fractrain import data
from fractrain.errors import UserError
from fractrain.inputs.cpu import ArraySource, CpuPipeline, StepBatches, train_transform
from fractrain.recipe import SWITCHES, AugmentRecipe
from fractrain.schedule import EpochSchedule


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the schedule -----------------------------------------------------------------
@pytest.mark.parametrize("n, batch, world", [(16, 8, 1), (16, 12, 2), (10, 4, 4), (7, 6, 3), (5, 16, 2)])
def test_schedule_every_sample_once_per_epoch_across_ranks(n, batch, world):
    schedules = [EpochSchedule(n, batch, seed=3, world_size=world, rank=r) for r in range(world)]
    epochs = 4
    steps = -(-epochs * n // batch)
    stream = np.concatenate([np.concatenate([s.indices(step) for s in schedules]) for step in range(steps)])
    assert all(len(s.indices(0)) == batch // world for s in schedules)  # equal batches on every rank
    orders = [stream[e * n:(e + 1) * n] for e in range(epochs)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(n))
    if n > 4:
        assert len({tuple(o) for o in orders}) > 1, "the order must change between epochs"


def test_schedule_is_a_pure_function_of_seed_and_step():
    a = EpochSchedule(100, 32, seed=7, world_size=2, rank=1)
    b = EpochSchedule(100, 32, seed=7, world_size=2, rank=1)
    c = EpochSchedule(100, 32, seed=8, world_size=2, rank=1)
    late = [a.indices(s) for s in (50, 3, 17)]  # any order of queries
    assert all(np.array_equal(x, b.indices(s)) for x, s in zip(late, (50, 3, 17)))
    assert not np.array_equal(a.indices(3), c.indices(3))
    assert a.steps_for(1000) == 32 and a.epochs_done(32) == 10


def test_global_batch_must_divide_by_world_size():
    from fractrain.run import check_batch

    with pytest.raises(UserError, match="not divisible by the world size 8"):
        check_batch(250, 8, mixes=False)
    with pytest.raises(UserError, match="must be even with Mixup"):
        check_batch(24, 8, mixes=True)
    assert check_batch(256, 8, mixes=True) == 32


# --- reading the shards -------------------------------------------------------------
def test_load_decodes_every_sample_in_index_order(tiny_dataset):
    ds = data.load(str(tiny_dataset))
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    assert ds.images.shape == (16, 64, 64) and ds.images.dtype == np.uint8
    stored = [s.label for shard in manifest["shards"] for s in read_shard(str(tiny_dataset / shard["file"]))]
    assert ds.labels.tolist() == stored == list(range(16))
    assert ds.num_classes == 16 and ds.images.reshape(16, -1).max(axis=1).min() > 0  # no blank rows
    assert ds.manifest_sha256 == __import__("hashlib").sha256((tiny_dataset / "manifest.json").read_bytes()).hexdigest()


def test_a_version_1_manifest_listing_every_sample_loads_the_same(tmp_path, tiny_dataset):
    root = tmp_path / "shards"
    shutil.copytree(tiny_dataset, root)
    as_version_1(root)
    old, new = data.load(str(root)), data.load(str(tiny_dataset))
    assert old.manifest["schema_version"] == 1 and np.array_equal(old.images, new.images)
    assert old.labels.dtype == new.labels.dtype == np.int64 and old.labels.tolist() == new.labels.tolist()


def test_load_falls_back_to_a_file_when_memory_is_short(tiny_dataset):
    in_memory = data.load(str(tiny_dataset))
    on_disk = data.load(str(tiny_dataset), memory_limit=1000)
    assert isinstance(on_disk.images, np.memmap)
    assert np.array_equal(in_memory.images, on_disk.images)


class ThreadGroup:
    """A data.NodeGroup of ``size`` threads (the collectives as barriers), to
    run the shared load of several ranks in one process."""

    def __init__(self, size: int):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=60)
        self.values: list = [None] * size

    def member(self, index: int) -> data.NodeGroup:
        def share(value):
            self.values[index] = value
            self.barrier.wait()
            leader = self.values[0]
            self.barrier.wait()
            return leader

        def any_failed(flag):
            self.values[index] = flag
            self.barrier.wait()
            failed = any(self.values)
            self.barrier.wait()
            return failed

        return data.NodeGroup(index, self.size, share, any_failed)

    def load(self, url: str, **kwargs) -> list:
        """data.load on every member at once: each member's dataset, or the exception it raised."""
        results: list = [None] * self.size

        def run(index):
            try:
                results[index] = data.load(url, group=self.member(index), **kwargs)
            except Exception as error:  # noqa: BLE001 - handed to the test
                results[index] = error

        threads = [threading.Thread(target=run, args=(i,)) for i in range(self.size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results


def _shared_files(digest: str) -> list:
    import glob
    import tempfile

    return [p for folder in ("/dev/shm", tempfile.gettempdir()) for p in glob.glob(f"{folder}/fractrain-{digest[:16]}-*")]


@pytest.mark.parametrize("size", [2, 3])
def test_ranks_of_a_node_share_one_decoded_copy(tiny_dataset, size):
    """Each member decodes its share of the shards into one file-backed copy
    that all map; the result is the single-process load, and the file is gone
    (unlinked once every member has mapped it)."""
    alone = data.load(str(tiny_dataset))
    logs = []
    shared = ThreadGroup(size).load(str(tiny_dataset), log=logs.append)
    for ds in shared:
        assert isinstance(ds, data.ShardDataset), ds
        assert isinstance(ds.images, np.memmap) and np.array_equal(ds.images, alone.images)
        assert np.array_equal(ds.labels, alone.labels)
    assert len({ds.images.filename for ds in shared}) == 1  # one file, mapped by all
    assert any(f"one copy shared by {size} ranks" in line for line in logs)
    assert _shared_files(alone.manifest_sha256) == []


def test_shared_load_without_room_loads_a_copy_per_rank(tiny_dataset, monkeypatch):
    monkeypatch.setattr(data, "_create_shared_file", lambda nbytes, digest: None)
    alone = data.load(str(tiny_dataset))
    for ds in ThreadGroup(2).load(str(tiny_dataset)):
        assert not isinstance(ds.images, np.memmap) and np.array_equal(ds.images, alone.images)


def test_a_bad_shard_stops_every_rank_of_a_shared_load(tmp_path, tiny_dataset):
    """The member that reads the bad shard names it; the others say another
    rank failed; nobody hangs and no file is left behind."""
    root, name = _damaged(tmp_path, tiny_dataset, "flipped")  # shard 1: member 1's with two members
    errors = ThreadGroup(2).load(str(root))
    assert all(isinstance(e, UserError) for e in errors), errors
    assert name in str(errors[1]) and "another rank" in str(errors[0])
    digest = __import__("hashlib").sha256((root / "manifest.json").read_bytes()).hexdigest()
    assert _shared_files(digest) == []


def test_manifest_shards_must_tile_the_samples(tmp_path, tiny_dataset):
    root = tmp_path / "shards"
    shutil.copytree(tiny_dataset, root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["shards"][1]["first"] += 1
    manifest["shards"][2]["first"] -= 1
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="starts at sample"):
        data.load(str(root))


def _damaged(tmp_path, tiny_dataset, how):
    root = tmp_path / "shards"
    shutil.copytree(tiny_dataset, root)
    shard = root / json.loads((root / "manifest.json").read_text())["shards"][1]["file"]
    if how == "missing":
        shard.unlink()
    elif how == "truncated":
        shard.write_bytes(shard.read_bytes()[:-700])
    elif how == "flipped":
        raw = bytearray(shard.read_bytes())
        raw[1500] ^= 0xFF
        shard.write_bytes(bytes(raw))
    return root, shard.name


@pytest.mark.parametrize("how, message", [("missing", "is missing"), ("truncated", "is corrupt"),
                                          ("flipped", "is corrupt: sha256")])
def test_a_bad_shard_stops_the_load_naming_the_file(tmp_path, tiny_dataset, how, message):
    root, name = _damaged(tmp_path, tiny_dataset, how)
    with pytest.raises(UserError, match=message) as caught:
        data.load(str(root))
    assert name in str(caught.value) and "\n" not in str(caught.value)


def test_transient_read_errors_are_retried(monkeypatch, tiny_dataset):
    from fracbuild import location

    monkeypatch.setattr(location, "RETRY_DELAY", 0.0)
    original = location._read_local
    failures = {"left": 3}

    def flaky(path):
        if path.endswith(".tar") and failures["left"]:
            failures["left"] -= 1
            raise ConnectionResetError("connection reset by peer")
        return original(path)

    monkeypatch.setattr(location, "_read_local", flaky)
    assert data.load(str(tiny_dataset)).num_samples == 16
    assert failures["left"] == 0

    def always_times_out(path):
        raise TimeoutError("timed out")

    monkeypatch.setattr(location, "_read_local", always_times_out)
    with pytest.raises(UserError, match="still failing after 4 tries") as caught:
        data.load(str(tiny_dataset))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("content, message", [(None, "no manifest"), ("{not json", "not valid JSON"),
                                              ('{"kind": "1p-frac"}', "not a valid fracbuild manifest")])
def test_a_missing_or_invalid_manifest_is_one_line(tmp_path, content, message):
    if content is not None:
        (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(UserError, match=message):
        data.read_manifest(str(tmp_path))


# --- the CPU input path -------------------------------------------------------------
def _plain_recipe(**changes) -> AugmentRecipe:
    """No mixing, no smoothing: a target's argmax is the sample's label."""
    return AugmentRecipe(input_size=32, label_smoothing=0.0, **changes).without(["mixup", "cutmix"])


def test_two_ranks_two_workers_see_every_class_once_per_epoch(tiny_dataset):
    ds = data.load(str(tiny_dataset))
    assert ds.labels.tolist() == list(range(16))  # 1p-frac: one image per class, label = index
    n, batch, world, steps = 16, 12, 2, 8  # 12 does not divide 16: epochs end inside batches
    per_rank = []
    for rank in range(world):
        schedule = EpochSchedule(n, batch, seed=5, world_size=world, rank=rank)
        pipe = CpuPipeline(ArraySource(ds.images, ds.labels), schedule, _plain_recipe(), 16, torch.device("cpu"),
                           seed=5, workers=2)
        per_rank.append([y.argmax(1) for _, y in pipe.batches(0, steps)])
    assert all(len(b) == batch // world for rank in per_rank for b in rank)
    stream = torch.cat([torch.cat([per_rank[r][s] for r in range(world)]) for s in range(steps)]).tolist()
    epochs = [stream[e * n:(e + 1) * n] for e in range(len(stream) // n)]
    assert len(epochs) == 6
    for order in epochs:
        assert sorted(order) == list(range(16))
    assert len({tuple(o) for o in epochs}) == 6


def test_a_batch_depends_on_its_step_only_not_on_workers(tiny_dataset):
    ds = data.load(str(tiny_dataset))
    schedule = EpochSchedule(16, 8, seed=1)
    recipe = AugmentRecipe(input_size=32)  # the full recipe, mixing included
    source = ArraySource(ds.images, ds.labels)
    with_workers = list(CpuPipeline(source, schedule, recipe, 16, torch.device("cpu"), 1, workers=2).batches(2, 5))
    in_process = list(CpuPipeline(source, schedule, recipe, 16, torch.device("cpu"), 1, workers=0).batches(3, 5))
    for (xa, ya), (xb, yb) in zip(with_workers[1:], in_process):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x, y = with_workers[0]
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (8, 16) and torch.allclose(y.sum(1), torch.ones(8))
    state = torch.get_rng_state()
    StepBatches(source, schedule, recipe, 16, seed=1)[0]
    assert torch.equal(state, torch.get_rng_state()), "a batch must not move the global generator"


@pytest.mark.parametrize("switch", SWITCHES)
def test_every_augmentation_can_be_switched_off(switch, tiny_dataset):
    recipe = AugmentRecipe(input_size=32).without([switch])
    assert recipe != AugmentRecipe(input_size=32)
    text = repr(train_transform(recipe))
    if switch == "randaugment":
        assert "RandAugment" not in text
    if switch == "erasing":
        assert "RandomErasing" not in text
    if switch == "flips":
        assert "Flip" not in text
    if switch == "crop":
        assert "scale=(1.0, 1.0)" in text


# --- the Pillow 13 posterize trap -------------------------------------------------------
def test_posterize_zero_bits_gives_a_black_image():
    import timm.data.auto_augment as aa

    from fractrain.timm_compat import safe_posterize

    gray = Image.fromarray(np.full((8, 8), 200, np.uint8))
    rgb = gray.convert("RGB")
    assert np.asarray(safe_posterize(gray, 0)).max() == 0 and safe_posterize(rgb, 0).mode == "RGB"
    assert np.array_equal(np.asarray(safe_posterize(gray, 2)), np.asarray(ImageOps.posterize(gray, 2)))
    assert aa.NAME_TO_OP["PosterizeIncreasing"] is safe_posterize
    if int(Image.__version__.split(".")[0]) >= 13:  # the trap is real on this Pillow
        with pytest.raises(ValueError):
            ImageOps.posterize(gray, 0)


def test_randaugment_at_magnitude_ten_survives_many_images():
    from timm.data.auto_augment import AugmentOp, rand_augment_transform

    # m10, no magnitude noise, 3 ops per image: PosterizeIncreasing keeps 0 bits.
    transform = rand_augment_transform("rand-m10-n3-mstd0-inc1", {"img_mean": (128, 128, 128)})
    assert any(op.name == "PosterizeIncreasing" for op in transform.ops)
    rng = np.random.default_rng(0)
    posterize = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)  # always applied, 0 bits kept
    black = posterize(Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)))
    assert np.asarray(black).max() == 0
    for _ in range(300):
        out = transform(Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)))
        assert out.size == (16, 16)
