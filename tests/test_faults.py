"""A build killed, crashed or out of disk leaves nothing that looks complete,
and --resume finishes it byte for byte."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from fracbuild import manifest as mf
from fracbuild import shards
from fracbuild.build import BuildSpec, run_build
from fracbuild.errors import BuildFailure

# Large enough that a build takes a few seconds, so it can be killed midway.
SLOW = {"num_classes": 480, "size": 256, "pad": 6, "iterations": 60000}
SLOW_ARGS = ["--L", "480", "--size", "256", "--iterations", "60000", "--shard-size", "8", "--name", "slow"]


def _complete_shards(folder):
    return sorted(p for p in os.listdir(folder) if shards.shard_pattern("slow").match(p))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted build."""
    out = tmp_path_factory.mktemp("reference") / "shards"
    spec = BuildSpec(kind="1p-frac", seed=0, params=SLOW, prefix="slow", shard_size=8)
    return run_build(spec, str(out), workers=2, progress=False, log=lambda m: None)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_killed_build_resumes_byte_identical(tmp_path, reference, workers):
    out = tmp_path / "shards"
    command = [sys.executable, "-m", "fracbuild.cli", "render", *SLOW_ARGS, "--out", str(out),
               "--workers", workers, "--no-progress"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() and len(_complete_shards(out)) >= 3):
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the whole job, as a scheduler would
    process.wait()
    assert not (out / mf.MANIFEST_NAME).exists(), "the build finished before it could be killed"
    # Whatever carries a final shard name is complete; the rest is marked partial.
    for name in _complete_shards(out):
        assert len(list(shards.read_shard(str(out / name)))) == 8
    assert 3 <= len(_complete_shards(out)) < 60

    from fracbuild.cli import main

    assert main(["render", *SLOW_ARGS, "--out", str(out), "--workers", workers, "--resume", "--no-progress"]) == 0
    resumed = json.loads((out / mf.MANIFEST_NAME).read_text())
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in reference["shards"]]
    assert resumed["samples"] == reference["samples"]
    assert not list(out.glob("*.partial")) and not (out / mf.BUILD_STATE_NAME).exists()


def test_resume_refuses_other_options(tmp_path, capsys):
    from fracbuild.cli import main

    out = tmp_path / "shards"
    out.mkdir()
    (out / mf.BUILD_STATE_NAME).write_text(json.dumps({"spec": {"kind": "1p-frac", "seed": 0, "params": {},
                                                                 "prefix": "slow", "shard_size": 8}}))
    assert main(["render", *SLOW_ARGS, "--out", str(out), "--resume", "--no-progress", "--seed", "3"]) == 2
    assert "differs from the build" in capsys.readouterr().err


def test_full_disk_fails_cleanly(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_add = shards._add_member

    def add_until_full(tar, name, data):
        calls["n"] += 1
        if calls["n"] > 40:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_add(tar, name, data)

    monkeypatch.setattr(shards, "_add_member", add_until_full)
    spec = BuildSpec(kind="1p-frac", seed=0, prefix="tiny", shard_size=6,
                     params={"num_classes": 30, "size": 64, "pad": 2, "iterations": 5000})
    with pytest.raises(BuildFailure, match="No space left on device"):
        run_build(spec, str(tmp_path / "out"), workers=1, progress=False, log=lambda m: None)
    left = sorted(os.listdir(tmp_path / "out"))
    assert not any(name.endswith(".partial") for name in left)
    assert mf.MANIFEST_NAME not in left
    assert all(len(list(shards.read_shard(str(tmp_path / "out" / n)))) == 6 for n in left if n.endswith(".tar"))


def test_crashed_worker_fails_the_build_instead_of_hanging(tmp_path):
    spec = BuildSpec(kind="1p-frac", seed=0, params=SLOW, prefix="slow", shard_size=8)
    outcome: dict = {}

    def build():
        try:
            run_build(spec, str(tmp_path / "out"), workers=2, progress=False, log=lambda m: None)
            outcome["result"] = "finished"
        except BaseException as error:  # noqa: BLE001 - recorded for the assertion below
            outcome["result"] = error

    thread = threading.Thread(target=build, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not multiprocessing.active_children():
        time.sleep(0.005)
    victims = multiprocessing.active_children()
    assert victims, "no worker process appeared"
    os.kill(victims[0].pid, signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive(), "the build hung after a worker died"
    assert isinstance(outcome["result"], BuildFailure)
    assert "worker process died" in str(outcome["result"])
    assert not (tmp_path / "out" / mf.MANIFEST_NAME).exists()
