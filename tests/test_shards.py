"""The one tar reader of both commands (fracbuild.shards.read_samples):
WebDataset's grouping rules, fracbuild's required fields on top."""

from __future__ import annotations

import io
import tarfile

import pytest

from fracbuild import shards


def _tar(members: list[tuple[str, bytes | None]]) -> bytes:
    """A tar of (name, payload) members; payload None: a folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            if payload is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def test_samples_are_runs_of_one_key_with_webdatasets_naming():
    data = _tar([("train", None), ("train/a.b.PNG", b"1"), ("train/a.b.cls", b"3"), ("val/a.png", b"2"),
                 ("val/a.cls", b"4"), ("c.jpg", b"5")])
    assert list(shards.read_samples(data)) == [
        ("train/a", {"b.png": b"1", "b.cls": b"3"}),  # the folder member is skipped; key up to the name's first dot
        ("val/a", {"png": b"2", "cls": b"4"}),  # same file name in another folder: another sample
        ("c", {"jpg": b"5"}),
    ]


def test_a_field_twice_in_one_sample_and_a_broken_tar_are_errors():
    with pytest.raises(ValueError, match="sample x has two png fields"):
        list(shards.read_samples(_tar([("x.png", b"1"), ("x.PNG", b"2")])))
    with pytest.raises(ValueError, match="not a valid tar"):
        list(shards.read_samples(b"not a tar at all" * 40))


def test_a_fracbuild_shard_needs_its_three_fields():
    (sample,) = shards.read_shard(_tar([("000007.cls", b"2"), ("000007.json", b"{}"), ("000007.png", b"P")]))
    assert (sample.key, sample.label, sample.record, sample.png) == ("000007", 2, {}, b"P")
    with pytest.raises(ValueError, match="sample 000007 lacks field"):
        list(shards.read_shard(_tar([("000007.cls", b"2"), ("000007.png", b"P")])))
