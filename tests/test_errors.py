"""Every documented bad input of ``fracbuild`` is one line on stderr, exit
code 2, and nothing left behind; a full disk while writing the state file,
``_info.json`` or the manifest is one line and leaves a resumable folder.

Read-only and full disks are real: a small tmpfs is mounted where the
machine lets this process mount (root in a container that allows it); those
cases are skipped elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid

import pytest

from fracbuild import manifest as mf
from fracbuild import outlock
from fracbuild.build import BuildSpec, run_build
from fracbuild.cli import main
from fracbuild.errors import BuildFailure, redact

TINY = ["--L", "8", "--size", "64", "--pad", "2", "--iterations", "5000", "--no-progress", "--workers", "1"]
SEARCH = TINY[:8]  # search has neither --no-progress nor --workers
PAGE = 4096


@contextlib.contextmanager
def _tmpfs(folder, size: int, read_only: bool = False):
    """A tmpfs of ``size`` bytes mounted on ``folder``; skips the test where
    this process may not mount."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def read_only(tmp_path):
    with _tmpfs(tmp_path / "ro", 1 << 20, read_only=True) as folder:
        yield folder


def _snapshot(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, dirs, files in os.walk(root)
                  for f in files + dirs)


def _bad(capsys, argv, tmp_path, needle: str) -> None:
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: "), captured.err
    assert needle in captured.err, captured.err
    assert _snapshot(tmp_path) == before, "a failed command left files behind"


def _existing_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("x")
    return path


def _nonempty(tmp_path):
    folder = tmp_path / "full"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    return folder


# (id, argv builder from tmp_path, text the one line must hold)
BAD_INPUTS = [
    ("render: --out is a file", lambda t: ["render", *TINY, "--out", _existing_file(t)], "is a file"),
    ("render: --out not empty", lambda t: ["render", *TINY, "--out", _nonempty(t)], "pass --resume"),
    ("render: --resume and --overwrite",
     lambda t: ["render", *TINY, "--out", t / "o", "--resume", "--overwrite"], "exclude each other"),
    ("render: --resume of nothing", lambda t: ["render", *TINY, "--out", _nonempty(t), "--resume"],
     "no unfinished fracbuild build"),
    ("render: --shard-size 0", lambda t: ["render", *TINY, "--out", t / "o", "--shard-size", "0"], "--shard-size"),
    ("render: --name with a dot", lambda t: ["render", *TINY, "--out", t / "o", "--name", "a.b"], "--name"),
    ("render: --workers 0", lambda t: ["render", *TINY[:-2], "--out", t / "o", "--workers", "0"], "--workers"),
    ("render: --L 0", lambda t: ["render", *TINY[2:], "--L", "0", "--out", t / "o"], "error"),
    ("render: unknown --ifs", lambda t: ["render", *TINY, "--out", t / "o", "--ifs", t / "none.json"],
     "cannot read --ifs"),
    ("render: --endpoint-url alone",
     lambda t: ["render", *TINY, "--out", t / "o", "--endpoint-url", "http://localhost:9"], "needs --publish"),
    ("render: endpoint without a scheme",
     lambda t: ["render", *TINY, "--out", t / "o", "--publish", "s3://b/p", "--endpoint-url", "localhost:9000"],
     "needs a scheme"),
    ("render: an option the kind lacks", lambda t: ["render", *TINY, "--out", t / "o", "--noise-std", "0.1"],
     "error"),
    ("search: --out exists", lambda t: ["search", *SEARCH, "--out", _existing_file(t)], "--overwrite"),
    ("search: --out in a missing folder", lambda t: ["search", *SEARCH, "--out", t / "no" / "s.json"],
     "cannot write --out"),
    ("publish: endpoint without a scheme",
     lambda t: ["publish", t, "s3://b/p", "--endpoint-url", "localhost:9000", "--no-progress"], "needs a scheme"),
    ("publish: not an s3:// destination", lambda t: ["publish", t, t / "copy", "--no-progress"], "s3://"),
    ("publish: unfinished source", lambda t: ["publish", t, "s3://b/p", "--no-progress"], "manifest"),
    ("verify: endpoint without a scheme",
     lambda t: ["verify", "s3://b/p", "--endpoint-url", "localhost:9000", "--no-progress"], "needs a scheme"),
    ("verify: --deep -1", lambda t: ["verify", t, "--deep", "-1"], "--deep"),
    ("verify: no data set", lambda t: ["verify", t, "--no-progress"], "no manifest"),
    ("info: no data set", lambda t: ["info", t], "no manifest"),
    ("preview: --count 0", lambda t: ["preview", t, "--count", "0", "--out", t / "p.png"], "--count"),
    ("preview: --out in a missing folder", lambda t: ["preview", t, "--out", t / "no" / "p.png"],
     "cannot write --out"),
]


@pytest.mark.parametrize("argv, needle", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, argv, needle):
    built = argv(tmp_path)  # the inputs' own files are made before the snapshot
    _bad(capsys, built, tmp_path, needle)


@pytest.mark.parametrize("command", ["render", "search", "preview"])
def test_read_only_out_is_one_line_before_any_work(tmp_path, capsys, read_only, tiny_dataset, command):
    argv = {"render": ["render", *TINY, "--out", read_only / "set"],
            "search": ["search", *SEARCH, "--out", read_only / "system.json"],
            "preview": ["preview", tiny_dataset, "--out", read_only / "sheet.png"]}[command]
    # One line in all: had the search run first, its progress lines would precede it.
    _bad(capsys, argv, tmp_path, "Read-only file system")


def test_a_password_in_a_url_is_redacted():
    assert redact("cannot reach http://ann:hunter2@host:9000/x") == "cannot reach http://ann:***@host:9000/x"
    assert redact("s3://bucket/prefix and https://host/a@b") == "s3://bucket/prefix and https://host/a@b"


def test_a_password_in_an_endpoint_never_reaches_the_error_line(tmp_path, capsys):
    capsys.readouterr()
    code = main(["verify", "s3://b/p", "--endpoint-url", "ann:hunter2@localhost:9000", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "hunter2" not in err and "localhost:9000" in err, err


# --- a full disk ------------------------------------------------------------
SPEC = BuildSpec(kind="1p-frac", seed=0, prefix="tiny", shard_size=6,
                 params={"num_classes": 12, "size": 64, "pad": 2, "iterations": 5000})


def _fill(folder, keep: int) -> None:
    """Take all the free space of ``folder``'s file system but ``keep`` bytes."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    with open(os.path.join(folder, f"filler-{uuid.uuid4().hex}"), "wb") as handle:
        handle.write(b"\0" * max(free - keep, 0))


@pytest.mark.parametrize("target", [mf.BUILD_STATE_NAME, mf.TIMM_INFO_NAME, mf.MANIFEST_NAME])
def test_a_full_disk_while_writing_metadata_is_one_line_and_resumable(tmp_path, capsys, target):
    with _tmpfs(tmp_path / "disk", 4 << 20) as disk:
        out = disk / "set"
        if target == mf.BUILD_STATE_NAME:
            _fill(disk, keep=PAGE)  # room for the lock file's pid, none for the state file
            on_shard = None
        else:
            landed = []

            def on_shard(path, result):  # the last shard has landed: only the metadata is left to write
                landed.append(path)
                if len(landed) == 2:
                    _fill(disk, keep=0 if target == mf.TIMM_INFO_NAME else PAGE)

        with pytest.raises(BuildFailure) as failure:
            run_build(SPEC, str(out), workers=1, progress=False, log=lambda m: None, on_shard=on_shard)
        assert f"cannot write {out / target}: No space left on device" in str(failure.value)
        assert "\n" not in str(failure.value)
        if target == mf.BUILD_STATE_NAME:
            assert not out.exists(), "a build that wrote nothing left its folder"
        else:
            left = set(os.listdir(out))
            assert mf.MANIFEST_NAME not in left and mf.BUILD_STATE_NAME in left
            assert not {name for name in left if name.endswith(".partial")} and outlock.LOCK_NAME not in left
        for name in os.listdir(disk):
            if name.startswith("filler-"):
                os.remove(disk / name)
        manifest = run_build(SPEC, str(out), workers=1, resume=target != mf.BUILD_STATE_NAME, progress=False,
                             log=lambda m: None)
        assert json.loads((out / mf.MANIFEST_NAME).read_text())["shards"] == manifest["shards"]


def test_a_full_disk_is_one_line_through_the_command_line(tmp_path, capsys):
    with _tmpfs(tmp_path / "disk", 1 << 20) as disk:
        _fill(disk, keep=PAGE)
        capsys.readouterr()
        assert main(["render", *TINY, "--out", disk / "set"]) == 1
        err = capsys.readouterr().err
        last = err.splitlines()[-1]  # after the search's progress line
        assert "Traceback" not in err and last.startswith("failed: cannot write ") and "No space left" in last, err
        assert not (disk / "set").exists()


# --- fractrain runs the same mapping -------------------------------------
def test_the_shared_mapping_imports_no_torch():
    import sys as _sys

    done = subprocess.run([_sys.executable, "-c", "import sys, fracbuild.errors, fractrain.errors; "
                           "sys.exit('torch' in sys.modules)"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr or "importing the error mapping imported torch"


@pytest.mark.parametrize("option", ["--endpoint-url", "--timeout"])
def test_fractrain_says_where_an_s3_setting_comes_from(capsys, option):
    trainer = pytest.importorskip("fractrain.cli")
    capsys.readouterr()
    assert trainer.main(["--shards", "s3://b/p", option, "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"No such option '{option}': fractrain reads" in err and "$FRACBUILD_" in err, err
