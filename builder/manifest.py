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


def to_json_text(payload: Any) -> str:
    """JSON a person can read and diff: top-level keys indented, and each
    element of a long list (samples, shards) on one compact line, so that a
    21,000-class manifest stays a few MB instead of one number per line."""
    if not isinstance(payload, dict):
        return json.dumps(payload, indent=1) + "\n"
    lines = []
    for key, value in payload.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = ",\n".join("  " + json.dumps(item, separators=(",", ":")) for item in value)
            text = "[\n" + items + "\n ]"
        else:
            text = json.dumps(value, indent=1).replace("\n", "\n ")
        lines.append(f" {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write_json_atomic(path: str, payload: Any) -> None:
    """Write JSON to a temporary file, fsync and rename: never half a file."""
    with atomic_file(path) as handle:
        handle.write(to_json_text(payload).encode("utf-8"))


def environment() -> dict[str, str]:
    """Library versions that decide the shards' bytes (zlib via Pillow)."""
    import numba
    import numpy
    import PIL
    import zlib

    return {"python": platform.python_version(), "numpy": numpy.__version__, "numba": numba.__version__,
            "pillow": PIL.__version__, "zlib": zlib.ZLIB_RUNTIME_VERSION}


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
