"""The example manifests of the paper's settings are valid and reproduce."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from conftest import REPO_ROOT
from fracbuild import manifest as mf
from fracbuild.generators import get_kind

EXAMPLES = sorted((REPO_ROOT / "manifests" / "examples").glob("*.json*"))


def _load(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def test_both_paper_settings_are_there():
    assert {p.name.split(".json")[0] for p in EXAMPLES} == {
        "1p-frac_sigma3.5_delta0.1_L1000", "1p-frac_sigma3.5_delta0.1_L21000"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_valid_and_its_classes_reproduce(path):
    manifest = _load(path)
    assert mf.validation_errors(manifest) == []
    params = manifest["params"]
    assert (params["sigma"], params["delta"], params["perturbation"]) == (3.5, 0.1, "multiplicative")
    assert manifest["schema_version"] == mf.SCHEMA_VERSION and "samples" not in manifest
    assert manifest["num_classes"] == len(manifest["classes"]) in (1000, 21000)
    assert mf.disagreements(manifest) == []
    cls = get_kind(manifest["kind"])
    generator = cls(cls.make_params(params), manifest["seed"], manifest["system"])
    for index in (0, 1, manifest["num_samples"] - 1):  # the manifest alone re-renders a class
        record = manifest["classes"][index]
        sample = generator.render(index)
        assert sample.record["epsilon"] == record["epsilon"]
        assert sample.record["attempts"] == record["attempts"]
        assert sample.record["fill_rate"] == record["fill_rate"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_written_as_fracbuild_writes_json(path):
    """Byte-stable: the file is exactly what to_json_text makes of it."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    assert text == mf.to_json_text(json.loads(text))
    manifest = json.loads(text)  # and it records the _info.json its data set has
    info = mf.to_json_text(mf.timm_info(manifest)).encode("utf-8")
    assert manifest["timm_info"] == {"file": mf.TIMM_INFO_NAME, "bytes": len(info),
                                     "sha256": hashlib.sha256(info).hexdigest()}
