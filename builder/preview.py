"""A contact sheet: the first classes and their difference from class 0,
so a person sees what the perturbation degree does (the paper's Fig. 2b)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from . import encode, shards
from .location import Location

LABEL_HEIGHT = 14


def first_samples(location: Location, manifest: dict, count: int) -> list[tuple[int, np.ndarray]]:
    """(label, uint8 (H, W) grayscale image) of the first ``count`` samples."""
    found: list[tuple[int, np.ndarray]] = []
    for shard in manifest["shards"]:
        for sample in shards.read_shard(io.BytesIO(location.read_bytes(shard["file"]))):
            image = encode.decode_png(sample.png)
            if image.ndim == 3:
                image = np.asarray(Image.fromarray(image).convert("L"))
            found.append((sample.label, image))
            if len(found) == count:
                return found
    return found


def _thumbnail(image: np.ndarray, thumb: int) -> np.ndarray:
    """Occupancy (pixel > 1) averaged down to thumb x thumb and stretched:
    float32 (thumb, thumb) in [0, 1]. Averaging hides the random 3x3 masks,
    so what remains is the shape."""
    occupied = Image.fromarray(((image > 1) * 255).astype(np.uint8))
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
    manifest = location.read_manifest()
    sheet = contact_sheet(first_samples(location, manifest, count), thumb)
    sheet.save(out_path)
    return out_path
