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


def contact_sheet(samples: list[tuple[int, np.ndarray]], thumb: int = 128) -> Image.Image:
    """Row 1: the samples. Row 2: |sample - sample 0|, in red where pixels
    differ, so identical pixels stay black. Returns an RGB image."""
    columns = len(samples)
    sheet = Image.new("RGB", (columns * thumb, 2 * (thumb + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    reference = samples[0][1].astype(np.int16)
    for column, (label, image) in enumerate(samples):
        x = column * thumb
        small = Image.fromarray(image).resize((thumb, thumb), Image.Resampling.BOX)
        sheet.paste(small.convert("RGB"), (x, LABEL_HEIGHT))
        draw.text((x + 3, 1), f"class {label}", fill="black")
        difference = np.abs(image.astype(np.int16) - reference).astype(np.uint8)
        # Stretch so that any difference is visible, and tint it red.
        peak = max(int(difference.max()), 1)
        stretched = (difference.astype(np.float32) * (255.0 / peak)).astype(np.uint8)
        red = np.zeros((*stretched.shape, 3), dtype=np.uint8)
        red[..., 0] = stretched
        y = thumb + 2 * LABEL_HEIGHT
        sheet.paste(Image.fromarray(red).resize((thumb, thumb), Image.Resampling.BOX), (x, y))
        changed = float(np.count_nonzero(difference)) / difference.size
        draw.text((x + 3, thumb + LABEL_HEIGHT + 1), f"vs 0: {changed:.1%} px", fill="black")
    return sheet


def write_preview(location: Location, out_path: str, count: int = 8, thumb: int = 128) -> str:
    manifest = location.read_manifest()
    sheet = contact_sheet(first_samples(location, manifest, count), thumb)
    sheet.save(out_path)
    return out_path
