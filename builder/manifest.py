"""The manifest: everything needed to understand, verify and rebuild a data
set, written last as the commit marker of a build."""

from __future__ import annotations

import json
import os
import platform
from importlib import resources
from typing import Any

import jsonschema

from . import __version__
from .atomic import atomic_file
from .errors import UserError

SCHEMA_VERSION = 1
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


def tool_record() -> dict[str, str]:
    return {"name": "fracbuild", "version": __version__}
