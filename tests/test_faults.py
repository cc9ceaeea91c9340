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
from fracbuild import outlock, shards
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
    assert resumed["classes"] == reference["classes"]
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


# --- workers die with the build; one build per folder ------------------------
def _children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start_render(out, args=SLOW_ARGS, workers: str = "2") -> subprocess.Popen:
    command = [sys.executable, "-m", "fracbuild.cli", "render", *args, "--out", str(out),
               "--workers", workers, "--no-progress"]
    return subprocess.Popen(command, stderr=subprocess.PIPE, start_new_session=True)


def _wait_for_shards(out, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() and len(_complete_shards(out)) >= count):
        time.sleep(0.01)
    assert len(_complete_shards(out)) >= count, "the build wrote no shards"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads processes from /proc")
def test_workers_die_with_a_killed_build_and_resume_follows_at_once(tmp_path, reference):
    out = tmp_path / "shards"
    process = _start_render(out)
    _wait_for_shards(out, 2)
    workers = _children(process.pid)
    assert len(workers) == 2, workers
    os.kill(process.pid, signal.SIGKILL)  # the main process alone: the workers are not signalled
    process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.01)
    try:
        assert not any(_alive(pid) for pid in workers), "workers outlived their build"
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not (out / mf.MANIFEST_NAME).exists(), "the build finished before it could be killed"

    from fracbuild.cli import main

    assert main(["render", *SLOW_ARGS, "--out", str(out), "--workers", "2", "--resume", "--no-progress"]) == 0
    resumed = json.loads((out / mf.MANIFEST_NAME).read_text())
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in reference["shards"]]
    assert sorted(os.listdir(out)) == sorted([mf.MANIFEST_NAME, mf.TIMM_INFO_NAME, *_complete_shards(out)])


def test_a_second_render_or_publish_of_a_busy_folder_fails_at_once(tmp_path, capsys, monkeypatch):
    from fracbuild.cli import main

    monkeypatch.setattr(outlock, "BUSY_GRACE", 0.1)  # the holder below lives on: no need to wait for it

    out = tmp_path / "shards"
    longer = [*SLOW_ARGS, "--L", "48000"]  # outlasts the checks below; it is killed after them
    process = _start_render(out, longer)
    try:
        _wait_for_shards(out, 1)
        for args in (["render", *longer, "--out", str(out), "--resume", "--no-progress"],
                     ["publish", str(out), "s3://bucket/prefix", "--no-progress"]):
            capsys.readouterr()
            assert main(args) == 2
            err = capsys.readouterr().err
            assert err == f"error: another fracbuild is writing to {out} (pid {process.pid})\n"
        assert process.poll() is None, "the first build was disturbed"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- a resume trusts no finished-looking shard it has not checked ----------
TINY = {"num_classes": 30, "size": 64, "pad": 2, "iterations": 5000}


class _Interrupt(Exception):
    pass


def _interrupted_build(out, after: int) -> None:
    """A build stopped once ``after`` shards are complete (state file kept)."""
    landed = []

    def stop(path, result):
        landed.append(path)
        if len(landed) == after:
            raise _Interrupt

    spec = BuildSpec(kind="1p-frac", seed=0, params=TINY, prefix="tiny", shard_size=6)
    with pytest.raises(_Interrupt):
        run_build(spec, str(out), workers=1, progress=False, log=lambda m: None, on_shard=stop)


@pytest.mark.parametrize("planted", ["another shard", "a cut copy"])
def test_resume_replaces_a_wrong_shard_planted_under_a_final_name(tmp_path, planted):
    spec = BuildSpec(kind="1p-frac", seed=0, params=TINY, prefix="tiny", shard_size=6)
    expected = run_build(spec, str(tmp_path / "reference"), workers=1, progress=False, log=lambda m: None)
    out = tmp_path / "out"
    _interrupted_build(out, after=3)
    first, second = out / shards.shard_name("tiny", 0), out / shards.shard_name("tiny", 1)
    data = second.read_bytes()
    # A whole valid tar of the wrong samples, or the start of one.
    first.write_bytes(data if planted == "another shard" else data[: 3 * 512 * 2])
    log: list[str] = []
    resumed = run_build(spec, str(out), workers=1, resume=True, progress=False, log=log.append)
    assert "resume: 2 of 5 shards already complete" in log
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in expected["shards"]]
    assert first.read_bytes() == (tmp_path / "reference" / first.name).read_bytes()
    assert resumed["classes"] == expected["classes"]


# --- Ctrl-C -----------------------------------------------------------------
@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_prints_the_resume_hint_and_exits_130(tmp_path, reference, workers):
    out = tmp_path / "shards"
    process = _start_render(out, workers=workers)
    _wait_for_shards(out, 2)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    try:
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    err = err.decode()
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted: run again with --resume to finish", err
    assert "Traceback" not in err and "aborted" not in err and "\n\n" not in err, err
    assert not list(out.glob("*.partial")) and not (out / outlock.LOCK_NAME).exists()

    from fracbuild.cli import main

    assert main(["render", *SLOW_ARGS, "--out", str(out), "--workers", workers, "--resume", "--no-progress"]) == 0
    resumed = json.loads((out / mf.MANIFEST_NAME).read_text())
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in reference["shards"]]
