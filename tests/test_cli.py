"""The command line: every bad input is one line and exit 2 with nothing
written; search, --ifs, --manifest rebuild, preview, info and --help work."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from PIL import Image

from conftest import as_version_1
from fracbuild import manifest as mf
from fracbuild import remote_commit
from fracbuild.cli import main

TINY = ["--L", "8", "--size", "64", "--pad", "2", "--iterations", "5000", "--no-progress"]


def _one_line_error(capsys, code, argv):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("options,message", [
    (["--delta", "0"], "--delta must be > 0"),
    (["--delta", "-0.1"], "--delta must be > 0"),
    (["--delta", "1.0"], "must be < 1 in multiplicative mode"),
    (["--L", "0"], "--L must be >= 1"),
    (["--sigma", "6"], "--sigma must lie in (0, 6)"),
    (["--sigma", "0"], "--sigma must lie in"),
    (["--n-maps", "0"], "--n-maps must be >= 1"),
    (["--size", "12", "--pad", "6"], "too small for pad 6"),
    (["--threshold", "1"], "--threshold must lie in [0, 1)"),
    (["--threshold", "-0.1"], "--threshold must lie in [0, 1)"),
    (["--iterations", "1"], "--iterations must be >= 2"),
    (["--shard-size", "0"], "--shard-size must be >= 1"),
    (["--name", "a.b"], "no dots"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--L", "many"], "'many' is not a valid integer"),
    (["--mask", "dots"], "'dots' is not one of"),
    (["--resume", "--overwrite"], "exclude each other"),
])
def test_bad_render_options(tmp_path, capsys, options, message):
    out = tmp_path / "out"
    err = _one_line_error(capsys, 2, ["render", *TINY, *options, "--out", str(out)])
    assert err.startswith("error: ") and message in err
    assert not out.exists()


def test_additive_mode_accepts_delta_of_one_or_more(tmp_path, capsys):
    assert main(["render", *TINY, "--perturbation", "additive", "--delta", "1.5", "--out", str(tmp_path / "o"),
                 "--workers", "1"]) == 0


def test_non_empty_output_needs_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    err = _one_line_error(capsys, 2, ["render", *TINY, "--out", str(out)])
    assert "is not empty" in err
    err = _one_line_error(capsys, 2, ["render", *TINY, "--out", str(out), "--overwrite"])
    assert "did not write (notes.txt)" in err
    assert os.listdir(out) == ["notes.txt"]


def test_overwrite_replaces_a_build(tmp_path, tiny_dataset):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(tiny_dataset, out)
    assert main(["render", *TINY, "--name", "tiny", "--out", str(out), "--overwrite", "--workers", "1"]) == 0
    assert mf.read_manifest(str(out))["num_samples"] == 8
    assert not (out / "tiny-000002.tar").exists()  # the old third shard is gone


@pytest.mark.parametrize("content,message", [
    (None, "cannot read --ifs"),
    ("{not json", "is not valid JSON"),
    ('{"kind": "1p-frac", "system": {"maps": []}}', "has no system with maps and probabilities"),
])
def test_bad_ifs_file(tmp_path, capsys, content, message):
    ifs = tmp_path / "ifs.json"
    if content is not None:
        ifs.write_text(content)
    err = _one_line_error(capsys, 2, ["render", *TINY, "--ifs", str(ifs), "--out", str(tmp_path / "out")])
    assert message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content,message", [
    (None, "cannot read manifest"),
    ("[]", "is not a valid fracbuild manifest"),
    ('{"schema_version": 1}', "is not a valid fracbuild manifest"),
])
def test_bad_manifest_file(tmp_path, capsys, content, message):
    manifest = tmp_path / "m.json"
    if content is not None:
        manifest.write_text(content)
    err = _one_line_error(capsys, 2, ["render", "--manifest", str(manifest), "--out", str(tmp_path / "out")])
    assert message in err
    assert not (tmp_path / "out").exists()


def test_search_then_render_with_ifs(tmp_path, capsys):
    ifs = tmp_path / "ifs.json"
    assert main(["search", *TINY[:-1], "--seed", "3", "--out", str(ifs)]) == 0
    capsys.readouterr()
    written = json.loads(ifs.read_text())
    assert written["kind"] == "1p-frac" and written["seed"] == 3
    assert 0 < written["system"]["acceptance_estimate"] <= 1 and len(written["system"]["maps"]) == 2
    err = _one_line_error(capsys, 2, ["search", *TINY[:-1], "--out", str(ifs)])
    assert "exists" in err
    out = tmp_path / "out"
    assert main(["render", *TINY, "--ifs", str(ifs), "--out", str(out), "--workers", "1"]) == 0
    assert mf.read_manifest(str(out))["system"]["maps"] == written["system"]["maps"]


def test_rebuild_from_manifest_is_byte_identical(tmp_path, tiny_dataset):
    out = tmp_path / "again"
    assert main(["render", "--manifest", str(tiny_dataset / "manifest.json"), "--out", str(out),
                 "--workers", "2", "--no-progress"]) == 0
    original = mf.read_manifest(str(tiny_dataset))
    for shard in original["shards"]:
        assert (out / shard["file"]).read_bytes() == (tiny_dataset / shard["file"]).read_bytes()


def test_rebuild_from_a_version_1_manifest_writes_the_same_data_set_in_version_2(tmp_path, tiny_dataset):
    old = tmp_path / "old"
    shutil.copytree(tiny_dataset, old)
    as_version_1(old)
    out = tmp_path / "again"
    assert main(["render", "--manifest", str(old / "manifest.json"), "--out", str(out), "--workers", "1",
                 "--no-progress"]) == 0
    rebuilt, original = mf.read_manifest(str(out)), mf.read_manifest(str(tiny_dataset))
    assert rebuilt["schema_version"] == 2 and "samples" not in rebuilt
    assert remote_commit.content(rebuilt) == remote_commit.content(original)
    for shard in original["shards"]:
        assert (out / shard["file"]).read_bytes() == (tiny_dataset / shard["file"]).read_bytes()


def test_json_summary_on_stdout(tmp_path, capsys):
    assert main(["render", *TINY, "--out", str(tmp_path / "o"), "--workers", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_samples"] == 8 and summary["shards"] == 1


def test_preview_and_info(tmp_path, tiny_dataset, capsys):
    sheet = tmp_path / "preview.png"
    assert main(["preview", str(tiny_dataset), "--out", str(sheet), "--count", "5", "--thumb", "64"]) == 0
    with Image.open(sheet) as image:
        assert image.size == (5 * 64, 2 * (64 + 14))
    assert main(["info", str(tiny_dataset), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_classes"] == 16 and info["shards"] == 3 and info["kind"] == "1p-frac"


def test_help_states_units_and_defaults(capsys):
    assert main(["render", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # undo the terminal's wrapping
    for expected in ("--delta", "default: 0.1", "--size", "pixels", "default: 512", "--threshold",
                     "--workers", "--resume", "--shard-size", "--L"):
        assert expected in text, expected


def test_console_script_is_installed():
    import shutil
    import subprocess

    exe = shutil.which("fracbuild") or os.path.join(os.path.dirname(os.sys.executable), "fracbuild")
    done = subprocess.run([exe, "render", "--L", "0", "--out", "/nonexistent/x"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == "error: --L must be >= 1, got 0"


# Every bad input of every command: one line "error: ...", exit 2, the
# message naming the flag or argument the user typed. {data} is a copy of
# the tiny data set, {file} an ordinary file, {tmp} a fresh folder.
BAD_INPUTS = [
    (["preview", "{data}", "--out", "/nonexistent/dir/p.png"],
     "cannot write --out /nonexistent/dir/p.png: folder /nonexistent/dir does not exist"),
    (["preview", "{data}", "--out", "{file}/p.png"], "is a file, not a folder"),
    (["preview", "{data}", "--count", "0", "--out", "{tmp}/p.png"], "--count must be >= 1"),
    (["preview", "{data}", "--thumb", "4", "--out", "{tmp}/p.png"], "--thumb must be >= 8"),
    (["info", "{file}"], "LOCATION {file} is a file; give the data set's folder"),
    (["verify", "{file}"], "LOCATION {file} is a file; give the data set's folder"),
    (["verify", "{data}", "--deep", "-1"], "--deep must be >= 0"),
    (["render", "--kind", "fractaldb", "--L", "10", "--out", "{tmp}/o"], "--L is not an option of --kind fractaldb"),
    (["render", "--kind", "noise", "--categories", "3", "--noise", "uniform", "--out", "{tmp}/o"],
     "--categories is not an option of --kind noise"),
    (["search", "--categories", "3", "--noise", "uniform", "--out", "{tmp}/ifs.json"], "No such option '--categories'"),
    (["search", "--out", "{file}"], "--out {file} exists; pass --overwrite to replace it"),
    (["render", "--L", "17", "--size", "64", "--pad", "2", "--iterations", "5000", "--name", "tiny", "--shard-size",
      "6", "--resume", "--out", "{data}"], "--resume: --L differs from the build in {data}"),
]


@pytest.mark.parametrize("argv,message", BAD_INPUTS, ids=[" ".join(a[:3]) for a, _ in BAD_INPUTS])
def test_bad_inputs_are_one_line_naming_the_flag(tmp_path, tiny_dataset, capsys, argv, message):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    ordinary = tmp_path / "afile"
    ordinary.write_text("not a data set")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    names = {"data": str(data), "file": str(ordinary), "tmp": str(fresh)}
    err = _one_line_error(capsys, 2, [part.format(**names) for part in argv])
    assert err.startswith("error: ") and message.format(**names) in err, err
    assert list(fresh.iterdir()) == []  # nothing written


def test_help_lists_what_each_command_uses_with_defaults_written_one_way(capsys):
    assert main(["search", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for used in ("--sigma", "--delta", "--search-trials", "--overwrite", "--seed"):
        assert used in text, used
    for unused in ("--noise", "--canny-sigma", "--categories", "--warp", "--force", "--kind"):
        assert unused not in text, unused
    for command in ("render", "verify", "info", "preview"):
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "[default: progress]" not in text and "[default: True]" not in text, command
        if command != "render":
            assert "--endpoint-url" in text, command
    assert main(["verify", "--help"]) == 0
    assert "--json" in capsys.readouterr().out


def test_no_arguments_prints_the_help(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Usage: fracbuild") and "Commands:" in err and "error:" not in err
