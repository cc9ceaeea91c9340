"""verify catches every kind of damage, and says where."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import as_version_1
from fracbuild import encode, shards
from fracbuild.cli import main
from fracbuild.location import Location
from fracbuild.verify import verify


@pytest.fixture
def dataset(tmp_path, tiny_dataset):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset, copy)
    return copy


def _problems(path, deep=0):
    return verify(Location(str(path)), deep=deep)[1]


def test_intact_data_set_passes(dataset, capsys):
    assert _problems(dataset, deep=4) == []
    assert main(["verify", str(dataset), "--deep", "3", "--no-progress"]) == 0
    assert "OK, 16 samples in 3 shards, 3 re-rendered identically" in capsys.readouterr().err


def test_flipped_byte_is_caught(dataset, capsys):
    shard = dataset / "tiny-000001.tar"
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0x01
    shard.write_bytes(bytes(data))
    problems = _problems(dataset)
    assert any(p.startswith("tiny-000001.tar: sha256") for p in problems)
    assert main(["verify", str(dataset), "--no-progress"]) == 1
    assert "problem: tiny-000001.tar: sha256" in capsys.readouterr().err


def test_truncated_shard_is_caught(dataset):
    shard = dataset / "tiny-000002.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    problems = _problems(dataset)
    assert any("tiny-000002.tar" in p and "bytes" in p for p in problems)
    assert any("tiny-000002.tar" in p and ("unreadable" in p or "holds" in p) for p in problems)


def test_missing_shard_is_caught(dataset):
    (dataset / "tiny-000000.tar").unlink()
    problems = _problems(dataset)
    assert "tiny-000000.tar: missing" in problems
    assert any("class(es)" in p for p in problems)  # its six labels are gone too


def test_deep_check_catches_pixels_that_do_not_match_the_manifest(dataset):
    """A shard rewritten with other pixels but a matching checksum passes the
    shallow check; only re-rendering finds it."""
    manifest = json.loads((dataset / "manifest.json").read_text())
    first = manifest["shards"][0]
    samples = list(shards.read_shard(str(dataset / first["file"])))
    image = encode.decode_png(samples[0].png).copy()
    image[10, 10] = 255 - image[10, 10]
    samples[0].png = encode.encode_png(image)
    path = str(dataset / first["file"])
    shards.write_shard(path, [shards.EncodedSample(s.key, s.png, s.label, s.record) for s in samples])
    first["bytes"] = (dataset / first["file"]).stat().st_size
    first["sha256"] = shards.sha256_file(path)
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    assert _problems(dataset) == []
    deep = _problems(dataset, deep=16)
    assert deep == ["tiny-000000.tar: sample 0 differs from a fresh render in 1 pixels"]


def test_missing_manifest_is_one_line(tmp_path, capsys):
    assert main(["verify", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no manifest" in err


def test_num_samples_that_disagrees_with_the_classes_fails_and_info_reports_it(dataset, capsys):
    path = dataset / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["num_samples"] = 17  # 16 classes of one sample, shards holding 16
    path.write_text(json.dumps(manifest))
    assert "manifest: num_samples is 17 but it holds 16 classes of 1 sample(s)" in _problems(dataset)
    assert main(["verify", str(dataset), "--no-progress", "--json"]) == 1
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["ok"] is False and "manifest: num_samples is 17 but its shards hold 16 samples" in result["problems"]
    # The _info.json that timm reads disagrees with such a manifest too.
    assert f"failed: {dataset}: {len(result['problems'])} problems found" in captured.err
    assert main(["info", str(dataset)]) == 0
    err = capsys.readouterr().err
    assert "warning: manifest: num_samples is 17 but it holds 16 classes of 1 sample(s)" in err


def test_a_version_1_manifest_listing_every_sample_is_still_verified(dataset):
    manifest = as_version_1(dataset)
    assert manifest["schema_version"] == 1 and len(manifest["samples"]) == 16
    assert _problems(dataset, deep=2) == []
    manifest["num_samples"] = 17
    manifest["samples"][3]["label"] = 4
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    problems = _problems(dataset)
    assert "manifest: num_samples is 17 but it holds 16 sample records" in problems
    assert "tiny-000000.tar: sample 000003 has label 3, manifest says 4" in problems


@pytest.mark.parametrize("damage", ["class record", "shard classes", "class count"])
def test_class_records_and_shard_classes_are_checked(dataset, damage):
    path = dataset / "manifest.json"
    manifest = json.loads(path.read_text())
    if damage == "class record":
        manifest["classes"][7]["attempts"] += 1
        expected = "tiny-000001.tar: sample 000007's record differs from the manifest's"
    elif damage == "shard classes":
        manifest["shards"][1]["classes"] = [6, 12]
        expected = "manifest: shard tiny-000001.tar names classes [6, 12], its samples' are [6, 11]"
    else:
        del manifest["classes"][-1]
        expected = "manifest: 16 classes but 15 class records"
    path.write_text(json.dumps(manifest))
    assert expected in _problems(dataset)


def test_verify_json_and_bar_with_a_total(dataset, capsys):
    assert main(["verify", str(dataset), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"location": str(dataset), "ok": True, "problems": [], "num_samples": 16,
                                        "shards": 3, "re_rendered": 0}
    assert "16/16" in captured.err and "verify: 100%" in captured.err


@pytest.mark.parametrize("damage", ["garbage", "same-size garbage", "missing", "another set's"])
def test_a_damaged_timm_info_is_caught(dataset, tmp_path, damage):
    info = dataset / "_info.json"
    original = info.read_bytes()
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["timm_info"]["sha256"] and manifest["timm_info"]["bytes"] == len(original)
    if damage == "missing":
        info.unlink()
    elif damage == "another set's":
        info.write_text(json.dumps({**json.loads(original), "num_classes": 3}))
    else:
        info.write_bytes(b"x" * (len(original) if damage == "same-size garbage" else 5))
    problems = _problems(dataset)
    assert problems and all(p.startswith("_info.json: ") for p in problems), problems
