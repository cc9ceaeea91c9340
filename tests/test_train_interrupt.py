"""Interrupts keep the work: SIGINT and SIGTERM, sent for real to a
pre-training process, end it after the step in progress with a checkpoint,
the command that continues it, exit code 128 + signal and the run folder
kept; that command then finishes the run. Time-based checkpoints and run
folders left by killed runs."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from fractrain import checkpoint as ckpt
from fractrain.cli import main

TINY = ["--model", "vit_tiny", "--input-size", "32", "--model-arg", "patch_size=8", "--model-arg", "depth=2",
        "--model-arg", "embed_dim=64", "--model-arg", "num_heads=2", "-b", "8", "--no-progress",
        "--log-every", "1"]
STEPS = 200  # the signal goes after the second step; the resumed run does the rest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _steps_logged(out) -> int:
    try:
        with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as handle:
            return sum(1 for line in handle if '"loss"' in line)
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("signum, workers, whole_group", [
    (signal.SIGTERM, 0, False),  # a scheduler preempting the job
    (signal.SIGINT, 1, True),    # Ctrl-C in a terminal reaches the loader worker too
])
def test_signal_writes_a_checkpoint_and_the_resume_command_finishes_the_run(tiny_dataset, tmp_path, signum,
                                                                            workers, whole_group):
    out = tmp_path / "run"
    args = ["--shards", str(tiny_dataset), *TINY, "--steps", str(STEPS), "--workers", str(workers),
            "--out", str(out)]
    process = subprocess.Popen([sys.executable, "-m", "fractrain", *args], stderr=subprocess.PIPE, text=True,
                               env=_environment(), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while _steps_logged(out) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read()
        if whole_group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    lines = err.strip().splitlines()
    assert process.returncode == 128 + signum, err
    last = lines[-1]
    assert last.startswith(f"interrupted ({signal.Signals(signum).name}) at step "), err
    assert "Traceback" not in err
    stopped_at = int(last.split(" at step ")[1].split()[0])
    assert 2 <= stopped_at < STEPS
    written = out / ckpt.periodic_name(stopped_at)
    assert written.is_file() and str(written) in last
    assert not (out / "summary.json").exists()
    assert ckpt.load(str(written))["step"] == stopped_at

    # The printed command continues the run to its end.
    command = shlex.split(last.split("to continue: ", 1)[1])
    assert command[0] == "fractrain" and command[-2:] == ["--resume", "auto"]
    assert main(command[1:]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] == stopped_at and summary["steps"] == STEPS


def test_time_based_checkpoints(tiny_dataset, tmp_path, capsys):
    # --ckpt-every far beyond the run, --ckpt-minutes shorter than any step:
    # every step but the last writes one (the last writes final.pt), and the
    # newest --keep-ckpts stay.
    out = tmp_path / "run"
    assert main(["--shards", str(tiny_dataset), *TINY, "--steps", "5", "--workers", "0", "--ckpt-every", "1000",
                 "--ckpt-minutes", "0.000001", "--keep-ckpts", "2", "--out", str(out)]) == 0
    assert [step for step, _ in ckpt.periodic(str(out))] == [3, 4]
    assert (out / ckpt.FINAL).is_file()
    other = tmp_path / "other"
    assert main(["--shards", str(tiny_dataset), *TINY, "--steps", "5", "--workers", "0", "--ckpt-every", "1000",
                 "--ckpt-minutes", "0", "--out", str(other)]) == 0
    assert ckpt.periodic(str(other)) == []


@pytest.mark.parametrize("left", ["config.yaml", "metrics.jsonl", "tb"])
def test_folder_of_a_run_killed_before_its_first_checkpoint_is_not_reused_silently(tiny_dataset, tmp_path, capsys,
                                                                                   left):
    out = tmp_path / "run"
    out.mkdir()
    if left == "tb":
        (out / "tb").mkdir()
        (out / "tb" / "events.old").write_text("a killed run's events")
    else:
        (out / left).write_text("")
    args = ["--shards", str(tiny_dataset), *TINY, "--steps", "2", "--workers", "0", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--resume auto" in err[0] and "--out" in err[0], err
    # --resume auto starts it over there, without the old events.
    assert main([*args, "--resume", "auto"]) == 0
    assert not (out / "tb" / "events.old").exists()
    assert (out / "summary.json").is_file()


def test_signal_handling_outside_and_inside_the_loop():
    from fractrain import interrupts

    with pytest.raises(interrupts.Interrupted) as stopped, interrupts.sigterm_raises():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs at the next bytecode; never reached
    assert stopped.value.exit_code == 143 and "SIGTERM" in str(stopped.value)
    with interrupts.deferred() as request:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert request.signum == signal.SIGINT  # recorded, not raised
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C stops at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_resume_command_replaces_resume_and_spells_out_out():
    from fractrain import interrupts

    interrupts.set_command(["--shards", "my data", "--resume", "runs/x/ckpt.pt", "-b", "8"])
    try:
        assert interrupts.resume_command("runs/x") == (
            "fractrain --shards 'my data' -b 8 --out runs/x --resume auto")
        interrupts.set_command(["pretrain", "--out=runs/y", "--resume=auto"])
        assert interrupts.resume_command("runs/y") == "fractrain pretrain --out=runs/y --resume auto"
    finally:
        interrupts.set_command(None)
