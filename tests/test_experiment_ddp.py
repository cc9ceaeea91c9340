"""fractrain experiment on two gloo ranks: one process group for all the
experiment's runs, the data built once by rank 0, every run on both ranks,
the report written once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from test_train_ddp import run_ranks
from test_train_experiment import TINY, tree


def tiny_file(tmp_path, probe: bool = True):
    images = tree(tmp_path / "images")
    spec = {
        "name": "two ranks",
        "data": {"kind": "1p-frac", "seed": 0, "params": {"num_classes": 16, "size": 64, "pad": 2, "iterations": 5000}},
        "pretrain": ["--recipe", "exact-epochs", *TINY, "-b", "8", "--steps", "2"],
        "finetune": ["--recipe", "exact-epochs-finetune", *TINY, "--train", str(images), "--val", str(images),
                     "-b", "4", "--steps", "2"],
        "probe": {"flags": ["--input-size", "32", "--workers", "0", "--no-progress", "--device", "cpu",
                            "--train", str(images), "--val", str(images), "-b", "4", "--steps", "2"], "blocks": [1]},
        "rows": [{"name": "Δ 0.1", "params": {"delta": 0.1}}, {"name": "scratch", "scratch": True}],
    }
    if not probe:
        del spec["probe"]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return path


def test_two_rank_experiment_runs_every_run_on_both_ranks(tmp_path):
    path, work = tiny_file(tmp_path), tmp_path / "work"
    run_ranks(["experiment", str(path), "--work", str(work)])  # raises when a rank fails

    assert [p.name for p in (work / "data").iterdir()] == ["delta_0.1"]
    pre = json.loads((work / "pretrain" / "delta_0.1" / "summary.json").read_text())
    assert pre["world_size"] == 2 and pre["weights_identical_on_all_ranks"] is True
    for run in ("finetune/delta_0.1-s0", "finetune/scratch-s0", "probe/delta_0.1-k1-s0", "probe/scratch-k1-s0"):
        assert json.loads((work / run / "summary.json").read_text())["world_size"] == 2, run
    report = (work / "report.md").read_text()
    assert "| Δ 0.1 |" in report and "| scratch |" in report and "## Linear probe" in report
    assert (work / "top1.png").exists() and (work / "probe.png").exists()


@pytest.mark.slow
def test_torchrun_runs_an_experiment_in_one_process_group(tmp_path):
    """Under torchrun the rendezvous store is the agent's: runs that joined
    and left a group each in turn would meet the keys of the group before
    (gloo then connects to a rank's old, closed address)."""
    path, work = tiny_file(tmp_path, probe=False), tmp_path / "work"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fractrain",
               "experiment", str(path), "--work", str(work)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == str(work / "report.md")  # printed once, by rank 0
    assert done.stderr.count("experiment: fine-tuning") == 2  # rank 0 speaks for both
    for run in ("pretrain/delta_0.1", "finetune/delta_0.1-s0", "finetune/scratch-s0"):
        assert json.loads((work / run / "summary.json").read_text())["world_size"] == 2, run
