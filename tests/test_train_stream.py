"""The streaming input path: its exact-epoch order, the shard reader, the
same batches as the in-memory pipelines whatever the number of workers,
mid-epoch resume, a 2-rank gloo run, a corrupt shard, and S3."""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch

from fractrain import data, pretrain
from fractrain.inputs import streaming
from fractrain.cli import main
from fractrain.config import defaults, override
from fractrain.inputs.cpu import ArraySource, CpuPipeline
from fractrain.inputs.defaults import gpu_augment_class
from fractrain.inputs.device import DevicePipeline
from fractrain.recipe import AugmentRecipe
from fractrain.inputs.stream_schedule import StreamSchedule

sys.path.insert(0, os.path.dirname(__file__))
from conftest import build_tiny  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_VIT = {"patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2}
TINY_ARGS = ["--model", "vit_tiny", "--input-size", "32"] + [a for k, v in TINY_VIT.items()
                                                             for a in ("--model-arg", f"{k}={v}")]


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """16 samples in shards of 5, 5, 5 and 1: sizes that divide nothing evenly."""
    out = tmp_path_factory.mktemp("uneven") / "shards"
    build_tiny(out, shard_size=5)
    return out


def global_stream(counts, global_batch, world, window, steps, seed=3):
    """Every rank's indices per step -> the global stream (rank 0's slice, rank 1's, ...), and per-rank lengths."""
    ranks = [StreamSchedule(sum(counts), global_batch, seed, world, r, shard_counts=counts, window=window)
             for r in range(world)]
    per_step = [[s.indices(t) for s in ranks] for t in range(steps)]
    return np.concatenate([np.concatenate(parts) for parts in per_step]), per_step


@pytest.mark.parametrize("counts, global_batch, world, window", [
    ((5, 7, 3, 6, 4, 2), 4, 1, 4),      # 27 samples, batches that straddle every epoch end
    ((5, 7, 3, 6, 4, 2), 6, 2, 5),
    ((5, 7, 3, 6, 4, 2), 9, 3, 100),    # one window holds a rank's whole run
    ((5, 5, 5, 1), 10, 2, 1),           # no shuffle at all: the shard order alone
    ((1, 1, 1), 8, 4, 2),               # fewer samples than a global batch: ranks with empty runs
])
def test_every_sample_once_per_epoch_and_equal_batches(counts, global_batch, world, window):
    n = sum(counts)
    stream, per_step = global_stream(counts, global_batch, world, window, steps=15)
    assert all(len(part) == global_batch // world for parts in per_step for part in parts)
    for epoch in range(len(stream) // n):
        assert sorted(stream[epoch * n:(epoch + 1) * n].tolist()) == list(range(n)), epoch
    # The rule at the epoch's end: positions past an epoch's N belong to the next epoch's order.
    again, _ = global_stream(counts, global_batch, world, window, steps=15)
    assert np.array_equal(stream, again)
    other, _ = global_stream(counts, global_batch, world, window, steps=15, seed=4)
    assert not np.array_equal(stream, other)


def test_each_rank_reads_only_its_run_of_shards_and_windows_cover_the_steps():
    counts = (5, 7, 3, 6, 4, 2, 8, 5)
    world, b = 2, 3
    for rank in range(world):
        s = StreamSchedule(sum(counts), b * world, 0, world, rank, shard_counts=counts, window=4)
        for epoch in range(3):
            run = s.run_samples(epoch)
            shards = s.shards_of(run)
            # A contiguous run of the epoch's shard order: only the two ends may be shared with another rank.
            order = s.shard_order(epoch).tolist()
            places = sorted(order.index(int(k)) for k in shards)
            assert places == list(range(places[0], places[0] + len(places)))
            assert len(run) <= sum(counts) // world + b
        for step in range(20):
            wanted = set(s.indices(step).tolist())
            held = set(np.concatenate([s.window_samples(*key) for key in s.windows(step)]).tolist())
            assert wanted <= held, step
            position = s.position(step)
            assert position["epoch"] == (step * b * world + rank * b) // sum(counts)


def recipe32(**changes) -> AugmentRecipe:
    return AugmentRecipe(input_size=32, **changes)


def stream_feed(shards, global_batch=8, world=1, rank=0, window=4, readers=1):
    location, manifest, _ = data.read_manifest(str(shards))
    schedule = StreamSchedule.from_manifest(manifest, global_batch, 7, world, rank, window)
    return location, manifest, schedule, streaming.ShardFeed(location, manifest, schedule, readers=readers)


def take(batches, count):
    out = []
    for x, y in batches:
        out.append((x.clone(), y.clone()))
        if len(out) == count:
            break
    return out


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_cpu_stream_gives_the_in_memory_cpu_batches(uneven, workers):
    # The full recipe (RandAugment, Mixup/CutMix, erasing), over an epoch end.
    location, manifest, schedule, feed = stream_feed(uneven)
    recipe = recipe32()
    streamed = streaming.StreamCpuPipeline(feed, recipe, 16, torch.device("cpu"), 7, workers, 64, 1)
    cached = data.load(str(uneven), threads=1)
    reference = CpuPipeline(ArraySource(cached.images, cached.labels), schedule, recipe, 16, torch.device("cpu"), 7, 0)
    got, want = take(streamed.batches(1, 5), 4), take(reference.batches(1, 5), 4)
    assert len(got) == 4
    for (x, y), (xr, yr) in zip(got, want):
        assert torch.equal(x, xr) and torch.equal(y, yr)


@pytest.mark.parametrize("workers", [0, 2])
def test_gpu_stream_gives_the_cached_device_batches(uneven, workers):
    augment_cls = gpu_augment_class()
    if augment_cls is None:
        pytest.skip("fractrain.gpu_augment is not available")
    location, manifest, schedule, feed = stream_feed(uneven)
    recipe = recipe32()
    device = torch.device("cpu")
    streamed = streaming.StreamDevicePipeline(feed, recipe, 16, device, 7, 64, 1, workers=workers)
    cached = data.load(str(uneven), threads=1)
    reference = DevicePipeline(cached.images, cached.labels, schedule, recipe, 16, device, 7)
    got, want = take(streamed.batches(0, 3), 3), take(reference.batches(0, 3), 3)
    assert len(got) == 3
    for (x, y), (xr, yr) in zip(got, want):
        assert torch.equal(x, xr) and torch.equal(y, yr)


def test_feed_drops_windows_behind_it_and_reads_ahead_in_order(uneven, monkeypatch):
    reads = []
    original = streaming.read_samples

    def counting(url, shard, labels, width):
        reads.append(shard["file"])
        return original(url, shard, labels, width)

    monkeypatch.setattr(streaming, "read_samples", counting)
    _, _, schedule, feed = stream_feed(uneven, global_batch=4, window=4, readers=0)  # threads: see the reads
    items = list(feed.steps(range(0, 12)))  # three epochs
    assert [item.step for item in items] == list(range(12))
    assert all(np.array_equal(item.indices, schedule.indices(item.step)) for item in items)
    assert all(len(item.pngs) == 4 for item in items)
    # A window of 4 samples spans at most 2 shards of 5: at most 2 reads per window queued (up to one epoch
    # ahead), not a read of the set per step.
    windows = sum(schedule.window_count(e) for e in range(4))
    assert len(reads) <= 2 * windows
    assert sorted(set(reads)) == [f"tiny-00000{k}.tar" for k in range(4)]


def tiny_config(shards, out, **changes):
    values = {"data.shards": str(shards), "model.kwargs": TINY_VIT, "augment.input_size": 32, "batch_size": 6,
              "budget.epochs": None, "budget.steps": 12, "run.out": str(out), "run.workers": 0,
              "run.progress": False, "run.log_every": 2, "run.ckpt_every": 1.0, "data.memory_budget": 1e-6,
              "data.shuffle_buffer": 4}
    values.update(changes)
    return override(defaults("pretrain"), values)


@pytest.fixture(scope="module")
def fractaldb(tmp_path_factory):
    """A small FractalDB build (2 categories x 8 instances, 48 px, shards of 5)."""
    from fracbuild.build import BuildSpec, run_build

    out = tmp_path_factory.mktemp("fractaldb") / "shards"
    params = {"num_categories": 2, "repeats": 1, "instances": 8, "size": 48, "pad": 2, "iterations": 2000,
              "search_size": 64, "search_iterations": 3000}
    run_build(BuildSpec(kind="fractaldb", seed=0, params=params, prefix="fdb", shard_size=5), str(out),
              workers=1, progress=False, log=lambda m: None)
    return out


@pytest.mark.parametrize("input_path", ["cpu", "gpu"])
def test_fractaldb_over_budget_streams_and_resumes_mid_epoch_bit_exact(fractaldb, tmp_path, input_path):
    # 16 samples, global batch 6: epochs end inside batches; checkpoints every epoch (2.67 steps) land mid-epoch.
    if input_path == "gpu" and gpu_augment_class() is None:
        pytest.skip("fractrain.gpu_augment is not available")
    whole = pretrain.run(tiny_config(fractaldb, tmp_path / "whole", **{"run.input_path": input_path}))
    assert whole["input_path"] == f"{input_path}-stream"

    def kill_at_8(step):
        if step == 8:
            raise KeyboardInterrupt

    cut = tiny_config(fractaldb, tmp_path / "cut", **{"run.input_path": input_path})
    with pytest.raises(KeyboardInterrupt):
        pretrain.run(cut, on_step=kill_at_8)
    checkpoint = torch.load(tmp_path / "cut" / "ckpt-000000006.pt", weights_only=True)
    assert checkpoint["stream"]["epoch"] == 2 and checkpoint["stream"]["offset"] == 4  # 36 = 2 x 16 + 4
    resumed = pretrain.run(override(cut, {"run.workers": 2}), resume="auto")
    assert resumed["resumed_from_step"] == 6 and resumed["steps"] == 12
    a = torch.load(tmp_path / "whole" / "final.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_input_mode(uneven, tmp_path, capsys):
    out = tmp_path / "run"
    pretrain.run(tiny_config(uneven, out, **{"budget.steps": 3}))
    base = ["--shards", str(uneven), *TINY_ARGS, "-b", "6", "--steps", "3", "--workers", "0", "--no-progress",
            "--shuffle-buffer", "4", "--out", str(tmp_path / "again"), "--resume", str(out / "final.pt"),
            "--recipe", "exact-epochs"]  # the recipe of config.defaults, which made the run
    assert main(base + ["--input", "memory"]) == 2
    assert "was trained streaming the shards; resume it with --input stream" in capsys.readouterr().err
    assert main(base + ["--input", "stream", "--shuffle-buffer", "5"]) == 2
    assert "it was made with --shuffle-buffer 4, this run asks 5" in capsys.readouterr().err


def test_corrupt_shard_stops_the_run_with_one_line(uneven, tmp_path, capsys):
    copy = tmp_path / "shards"
    shutil.copytree(uneven, copy)
    victim = copy / "tiny-000002.tar"
    raw = bytearray(victim.read_bytes())
    raw[700] ^= 0xFF
    victim.write_bytes(bytes(raw))
    code = main(["--shards", str(copy), *TINY_ARGS, "-b", "8", "--steps", "6", "--workers", "0", "--no-progress",
                 "--input", "stream", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "tiny-000002.tar is corrupt: sha256" in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "final.pt").exists()


# --- two gloo ranks ------------------------------------------------------------------
def _recording_rank(rank: int, world: int, port: int, args: list[str], record: str) -> None:
    """A rank that writes down every step's indices as the streaming feed hands them out."""
    seen = []
    original = streaming.ShardFeed.steps

    def steps(self, numbers):
        for item in original(self, numbers):
            seen.append([item.step, item.indices.tolist(), item.labels.tolist()])
            yield item

    streaming.ShardFeed.steps = steps
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    code = main(args)
    with open(f"{record}-{rank}.json", "w", encoding="utf-8") as handle:
        json.dump(seen, handle)
    if code:
        sys.exit(code)


def test_two_rank_gloo_stream_has_exact_epochs_and_equal_batches(fractaldb, tmp_path):
    import torch.multiprocessing as mp
    from test_train_ddp import _free_port

    out, record = tmp_path / "run", str(tmp_path / "seen")
    # The FractalDB build (16 samples in shards of 5, 5, 5, 1) over a budget of 1 kB, so that --input auto
    # streams it; a global batch of 12; 2 loader workers per rank.
    args = ["--shards", str(fractaldb), *TINY_ARGS, "-b", "12", "--steps", "4", "--workers", "2", "--device", "cpu",
            "--no-progress", "--memory-budget", "0.000001", "--shuffle-buffer", "3", "--out", str(out)]
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["fractrain.cli", "fractrain.pretrain", "timm"])
    mp.start_processes(_recording_rank, args=(2, _free_port(), args, record), nprocs=2, join=True,
                       start_method="forkserver")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4 and summary["input_path"] == "cpu-stream"
    assert summary["weights_identical_on_all_ranks"] is True
    seen = [json.loads((tmp_path / f"seen-{r}.json").read_text()) for r in range(2)]
    assert [s[0] for s in seen[0]] == [s[0] for s in seen[1]] == list(range(4))
    assert all(len(s[1]) == 6 for rank in seen for s in rank)
    stream = [i for step in range(4) for rank in range(2) for i in seen[rank][step][1]]
    for epoch in range(len(stream) // 16):  # 48 samples: three whole epochs
        assert sorted(stream[epoch * 16:(epoch + 1) * 16]) == list(range(16))
    labels = data.load(str(fractaldb), threads=1).labels
    assert all(labels[s[1]].tolist() == s[2] for rank in seen for s in rank)


def test_gpu_path_trains_from_the_stream(uneven, tmp_path):
    if gpu_augment_class() is None:
        pytest.skip("fractrain.gpu_augment is not available")
    summary = pretrain.run(tiny_config(uneven, tmp_path / "run", **{"run.input_path": "gpu", "budget.steps": 3,
                                                                      "run.workers": 1}))
    assert summary["input_path"] == "gpu-stream" and summary["steps"] == 3 and summary["last_loss"] > 0


def test_bad_input_options_are_one_line_errors(uneven, tmp_path, capsys):
    base = ["--shards", str(uneven), *TINY_ARGS, "-b", "8", "--steps", "2", "--workers", "0", "--no-progress",
            "--out", str(tmp_path / "run")]
    assert main(base + ["--memory-budget", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --memory-budget must be > 0 GB, got 0.0"
    assert main(base + ["--shuffle-buffer", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --shuffle-buffer must be >= 1, got 0"
    assert not (tmp_path / "run").exists()
