"""A contact sheet: the first classes and how each differs from class 0,
so a person sees what the perturbation degree does (the paper's Fig. 2b)."""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np
from PIL import Image, ImageDraw

from . import encode, shards
from . import manifest as mf
from .atomic import check_writable
from .location import Location

LABEL_HEIGHT = 14


def first_of_each_class(location: Location, manifest: dict, count: int) -> list[tuple[int, np.ndarray]]:
    """(label, uint8 (H, W) grayscale image) of the first sample of each of
    the first ``count`` classes, reading only the shards that hold them."""
    per_class = mf.samples_per_class(manifest)
    wanted = {label * per_class: label for label in range(min(count, manifest["num_classes"]))}  # index -> label
    found: dict[int, np.ndarray] = {}
    for shard in manifest["shards"]:
        if not any(shard["first"] <= index < shard["first"] + shard["count"] for index in wanted):
            continue
        for sample in shards.read_shard(io.BytesIO(location.read_bytes(shard["file"]))):
            if int(sample.key) in wanted:
                image = encode.decode_png(sample.png)
                if image.ndim == 3:
                    image = np.asarray(Image.fromarray(image).convert("L"))
                found[wanted[int(sample.key)]] = image
    return sorted(found.items())


def _thumbnail(image: np.ndarray, thumb: int) -> np.ndarray:
    """Where the image differs from its background (its most common value),
    averaged down to thumb x thumb and stretched: float32 (thumb, thumb) in
    [0, 1]. Averaging hides the random 3x3 masks, so what remains is the
    shape; the background may be black (fractals) or white (RCDB)."""
    background = int(np.bincount(image.ravel(), minlength=256).argmax())
    differs = np.abs(image.astype(np.int16) - background) > 1
    occupied = Image.fromarray((differs * 255).astype(np.uint8))
    small = np.asarray(occupied.resize((thumb, thumb), Image.Resampling.BOX), dtype=np.float32) / 255.0
    return np.clip(small * 3.0, 0.0, 1.0)


def contact_sheet(samples: list[tuple[int, np.ndarray]], thumb: int = 128) -> Image.Image:
    """Row 1: the samples. Row 2: each sample over sample 0, as colours:
    green where only sample 0 has points, magenta where only this sample
    has them, white where both do. Returns an RGB image."""
    columns = len(samples)
    sheet = Image.new("RGB", (columns * thumb, 2 * (thumb + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    reference = _thumbnail(samples[0][1], thumb)
    for column, (label, image) in enumerate(samples):
        x = column * thumb
        small = Image.fromarray(image).resize((thumb, thumb), Image.Resampling.BOX)
        sheet.paste(small.convert("RGB"), (x, LABEL_HEIGHT))
        draw.text((x + 3, 1), f"class {label}", fill="black")
        occupancy = _thumbnail(image, thumb)
        overlay = np.stack([occupancy, reference, occupancy], axis=-1)
        sheet.paste(Image.fromarray((overlay * 255).astype(np.uint8)), (x, thumb + 2 * LABEL_HEIGHT))
        both = np.minimum(occupancy > 0, reference > 0).sum()
        either = np.maximum(occupancy > 0, reference > 0).sum()
        draw.text((x + 3, thumb + LABEL_HEIGHT + 1), f"overlap with 0: {both / max(either, 1):.0%}", fill="black")
    return sheet


def write_preview(location: Location, out_path: str, count: int = 8, thumb: int = 128) -> str:
    """Write the contact sheet as a PNG at ``out_path`` (through a temporary
    name, so a failure never leaves half an image)."""
    check_writable(out_path)
    manifest = location.read_manifest()
    sheet = contact_sheet(first_of_each_class(location, manifest, count), thumb)
    temporary = out_path + ".partial"
    try:
        sheet.save(temporary, format="PNG")
        os.replace(temporary, out_path)
    except BaseException:  # a full disk, an interrupt: no half image left behind
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    return out_path
