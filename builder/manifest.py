"""The manifest: everything needed to understand, verify and rebuild a data
set, written last as the commit marker of a build.

Its size grows with the classes and the shards, never with the instances of
a class: the plan, the per-class records (where a class is one sample, its
record is the class: 1p-frac's epsilon), and per shard its sample and class
range, count, bytes and sha256. The per-sample records live in the shards'
own ``KEY.json`` members; a sample's label is ``index // samples_per_class``.
Version 1 manifests, which listed every sample, are still read.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import resources
from typing import Any

import jsonschema
import numpy as np

from . import __version__
from .atomic import atomic_file
from .errors import UserError

SCHEMA_VERSION = 2
SAMPLE_JSON_FIELD = "the sample's record: index, label and the kind's per-sample facts"
MANIFEST_NAME = "manifest.json"
TIMM_INFO_NAME = "_info.json"
BUILD_STATE_NAME = ".fracbuild-build.json"  # present while a build is unfinished


def load_schema() -> dict[str, Any]:
    text = resources.files("fracbuild").joinpath("schema/manifest.schema.json").read_text("utf-8")
    return json.loads(text)


def validation_errors(manifest: Any) -> list[str]:
    """Every schema violation as ``path: message`` (empty when valid)."""
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]


def parse_manifest(text: str, source: str) -> dict[str, Any]:
    """Parse and validate manifest text; raise UserError naming ``source``."""
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{source} is not valid JSON: {error}") from None
    problems = validation_errors(manifest)
    if problems:
        raise UserError(f"{source} is not a valid fracbuild manifest: {problems[0]}")
    return manifest


def read_manifest(path: str) -> dict[str, Any]:
    """Read a local manifest file (or the manifest inside a directory)."""
    if os.path.isdir(path):
        path = os.path.join(path, MANIFEST_NAME)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise UserError(f"cannot read manifest {path}: {error.strerror or error}") from None
    return parse_manifest(text, path)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _pretty(value: Any, depth: int) -> str:
    """Objects indented one space per level; a list of scalars on one line;
    a list of lists or objects with one compact element per line."""
    pad = " " * depth
    if isinstance(value, dict) and value:
        items = [f"{pad} {json.dumps(key)}: {_pretty(item, depth + 1)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value and not all(_is_scalar(item) for item in value):
        items = [f"{pad} {json.dumps(item, separators=(',', ':'))}" for item in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value, separators=(", ", ": "))


def to_json_text(payload: Any) -> str:
    """JSON a person can read and diff, and that stays small: a 21,000-class
    manifest has one line per sample instead of one line per number."""
    return _pretty(payload, 0) + "\n"


def write_json_atomic(path: str, payload: Any) -> None:
    """Write JSON to a temporary file, fsync and rename: never half a file."""
    with atomic_file(path) as handle:
        handle.write(to_json_text(payload).encode("utf-8"))


def environment() -> dict[str, str]:
    """Library versions that decide the shards' bytes (the PNG compressor
    above all) and the renders (numpy's generators, numba)."""
    import isal
    import numba
    import numpy
    import PIL

    return {"python": platform.python_version(), "numpy": numpy.__version__, "numba": numba.__version__,
            "isal": isal.__version__, "pillow": PIL.__version__}


def timm_info(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``_info.json`` that timm's ``--dataset wds/NAME`` reader reads:
    one ``train`` split with its shard files and their lengths."""
    shards = manifest["shards"]
    return {
        "name": manifest["layout"]["prefix"],
        "num_classes": manifest["num_classes"],
        "splits": {
            "train": {
                "name": "train",
                "num_samples": manifest["num_samples"],
                "filenames": [s["file"] for s in shards],
                "shard_lengths": [s["count"] for s in shards],
            }
        },
    }


# --- what every reader asks of a manifest, from either version ---------------
def samples_per_class(manifest: dict[str, Any]) -> int:
    """Instances of each class; sample ``i`` belongs to class ``i // samples_per_class``."""
    if "samples_per_class" in manifest:
        return manifest["samples_per_class"]
    return max(1, manifest["num_samples"] // manifest["num_classes"])


def sample_labels(manifest: dict[str, Any]) -> np.ndarray:
    """int64 (num_samples,): the label of every sample, by index."""
    if "samples" in manifest:  # a version 1 manifest: its records say
        return np.array([label for _, label in sorted((s["index"], s["label"]) for s in manifest["samples"])],
                        dtype=np.int64)
    return np.arange(manifest["num_samples"], dtype=np.int64) // samples_per_class(manifest)


def class_record(sample_record: dict[str, Any]) -> dict[str, Any]:
    """A sample's record without what its position gives (index, label)."""
    return {key: value for key, value in sample_record.items() if key not in ("index", "label")}


def shard_classes(first: int, count: int, per_class: int) -> list[int]:
    """[first label, last label] of the samples ``first .. first + count - 1``."""
    return [first // per_class, (first + count - 1) // per_class]


def upgraded(manifest: dict[str, Any]) -> dict[str, Any]:
    """A version 1 manifest as version 2 writes it (the same data set, the
    same recorded run): the sample records become class records where a
    class is one sample, each shard names its classes. Version 2 is returned
    as it is. The records must follow the label rule (every kind's do)."""
    if "samples" not in manifest:
        return manifest
    per_class = samples_per_class(manifest)
    records = sorted(manifest["samples"], key=lambda r: r["index"])
    if [r["label"] for r in records] != [i // per_class for i in range(manifest["num_samples"])]:
        raise UserError("the manifest's sample records are not numbered class-major, one per sample")
    upgraded: dict[str, Any] = {}
    for key, value in manifest.items():
        if key == "schema_version":
            value = SCHEMA_VERSION
        elif key == "samples":
            if per_class == 1:
                upgraded["classes"] = [class_record(r) for r in records]
            continue
        elif key == "shards":
            value = [{**{k: v for k, v in shard.items() if k in ("file", "index", "first", "count")},
                      "classes": shard_classes(shard["first"], shard["count"], per_class),
                      **{k: v for k, v in shard.items() if k not in ("file", "index", "first", "count")}}
                     for shard in value]
        elif key == "layout":
            value = {**value, "fields": {**value.get("fields", {}), "json": SAMPLE_JSON_FIELD}}
        upgraded[key] = value
        if key == "num_classes":
            upgraded["samples_per_class"] = per_class
    return upgraded


def disagreements(manifest: dict[str, Any]) -> list[str]:
    """Where a manifest contradicts itself, each as ``manifest: ...``:
    ``num_samples`` against its shards' counts, shards not back to back,
    classes that do not multiply up to ``num_samples``, class records not
    one per class, shards naming other classes than their samples' (a
    version 1 manifest: sample records numbered other than 0..N-1 once each)."""
    num_samples = manifest["num_samples"]
    problems = []
    covered = sum(s["count"] for s in manifest["shards"])
    if covered != num_samples:
        problems.append(f"manifest: num_samples is {num_samples} but its shards hold {covered} samples")
    following = 0
    for shard in sorted(manifest["shards"], key=lambda s: s["first"]):
        if shard["first"] != following:
            problems.append(f"manifest: shard {shard['file']} starts at sample {shard['first']}, expected {following}")
            break
        following += shard["count"]
    if "samples" in manifest:
        if len(manifest["samples"]) != num_samples:
            problems.append(f"manifest: num_samples is {num_samples} but it holds {len(manifest['samples'])} "
                            "sample records")
        indices = sorted(r["index"] for r in manifest["samples"])
        if indices != list(range(len(indices))):
            problems.append("manifest: the sample records are not numbered 0..N-1 once each")
        return problems
    num_classes, per_class = manifest["num_classes"], manifest["samples_per_class"]
    if num_samples != num_classes * per_class:
        problems.append(f"manifest: num_samples is {num_samples} but it holds {num_classes} classes of "
                        f"{per_class} sample(s)")
    classes = manifest.get("classes")
    if per_class == 1 and classes is None:
        problems.append("manifest: every class is one sample but it holds no class records")
    if classes is not None and len(classes) != num_classes:
        problems.append(f"manifest: {num_classes} classes but {len(classes)} class records")
    for shard in manifest["shards"]:
        spans = shard_classes(shard["first"], shard["count"], per_class)
        if shard["classes"] != spans:
            problems.append(f"manifest: shard {shard['file']} names classes {shard['classes']}, its samples' are {spans}")
            break
    return problems


def tool_record() -> dict[str, str]:
    return {"name": "fracbuild", "version": __version__}
