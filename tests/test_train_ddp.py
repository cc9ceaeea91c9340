"""fractrain with two gloo processes on the CPU: the command line run by
each rank of a real process group (fresh processes from a fork server, as
torchrun's are fresh), and once through torchrun itself."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from fractrain.cli import main

TINY_ARGS = ["--model", "vit_tiny", "--input-size", "32", "--model-arg", "patch_size=8", "--model-arg", "depth=2",
             "--model-arg", "embed_dim=64", "--model-arg", "num_heads=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, args: list[str]) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    code = main(args)
    if code:
        sys.exit(code)


def run_ranks(args: list[str], world: int = 2) -> None:
    # Not forked from pytest: once this process has run torch.compile (other
    # tests do) autograd starts its device threads, and a forked child's
    # backward then refuses to run. A fork server is a clean process; it
    # imports the heavy modules once for all the ranks it starts.
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["fractrain.cli", "fractrain.pretrain", "fractrain.gpu_augment", "timm"])
    mp.start_processes(_rank, args=(world, _free_port(), args), nprocs=world, join=True, start_method="forkserver")


@pytest.mark.parametrize("augment", ["cpu", "gpu"])
def test_two_rank_gloo_run_ends_with_identical_weights(tiny_dataset, tmp_path, augment):
    out = tmp_path / "run"
    # 2 ranks x 2 DataLoader workers (the GPU path's: planning the batches
    # ahead); a global batch of 12 over 16 samples puts epoch boundaries
    # inside batches.
    run_ranks(["--shards", str(tiny_dataset), *TINY_ARGS, "-b", "12", "--steps", "6", "--workers", "2",
               "--augment", augment, "--device", "cpu", "--no-progress", "--ckpt-every", "2", "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_path"] == augment
    assert summary["world_size"] == 2 and summary["steps"] == 6 and summary["global_batch"] == 12
    assert summary["weights_identical_on_all_ranks"] is True
    final = torch.load(out / "final.pt", weights_only=True)
    assert len(final["rng"]) == 2 and final["world_size"] == 2  # both ranks' generator states


@pytest.mark.parametrize("augment, workers", [("cpu", "0"), ("gpu", "0"), ("gpu", "2")])
def test_two_rank_resume_gives_the_same_weights(tiny_dataset, tmp_path, augment, workers):
    base = ["--shards", str(tiny_dataset), *TINY_ARGS, "-b", "8", "--workers", workers, "--augment", augment,
            "--device", "cpu", "--no-progress", "--ckpt-every", "2"]
    run_ranks(base + ["--steps", "8", "--out", str(tmp_path / "whole")])
    # A shorter budget changes the schedule, so stop by hand instead: run to
    # step 8 with a checkpoint at step 4, delete what came after it, resume.
    run_ranks(base + ["--steps", "8", "--out", str(tmp_path / "cut")])
    for name in ("final.pt", "summary.json", "ckpt-000000008.pt"):
        (tmp_path / "cut" / name).unlink(missing_ok=True)
    assert (tmp_path / "cut" / "ckpt-000000004.pt").exists()
    run_ranks(base + ["--steps", "8", "--out", str(tmp_path / "cut"), "--resume", "auto"])
    a = torch.load(tmp_path / "whole" / "final.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["resumed_from_step"] == 4


@pytest.mark.slow
def test_torchrun_launches_the_command_as_written(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fractrain",
               "--shards", str(tiny_dataset), *TINY_ARGS, "-b", "8", "--steps", "2", "--workers", "0",
               "--device", "cpu", "--no-progress", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "global batch 8 = 2 ranks x 4" in done.stderr
    assert done.stderr.count("done: 2 steps") == 1  # rank 0 speaks for both
    assert json.loads((out / "summary.json").read_text())["weights_identical_on_all_ranks"] is True
