"""Single real image (the 1p-frac paper's Tables 11 and 12): one photo,
optionally reduced to its Canny edges, and L classes of perturbed warps of it.

The released code has no settings for this variant; the defaults here are
ours: the photo is centre-cropped to a square and resized to --size with
Lanczos, warped (affine by default: identity + epsilon, epsilon ~
U[-Delta/2, Delta/2]^6 in normalised coordinates), then reduced to edges
(Canny, sigma 2, thresholds 0.1 / 0.2 of the largest gradient). Warping
before edge detection keeps the edges one pixel wide in every class.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from ... import seeds
from ...errors import UserError
from ..base import OneImagePerClass, ProgressCallback, Sample, classes_param, delta_param, param, size_param
from . import edges as edges_mod
from . import warps

EDGES = ("canny", "none")
DEFAULT_PHOTO = "skimage.data.camera"


@dataclass(frozen=True)
class RealImageParams:
    image: str | None = param(None, flag="--image", type=str, help="The photo",
                              shown="scikit-image's camera photo, if installed")
    edges: str = param("canny", flag="--edges", choices=EDGES,
                       help="Reduce each warped photo to its Canny edges, or keep it")
    warp: str = param("affine", flag="--warp", choices=warps.WARPS,
                      help="Per class, identity + epsilon of a 2x3 affine matrix, of the 2nd-order coefficients of "
                           "a quadratic map, or of a G x G grid of smooth displacements (normalised coordinates, "
                           "image = [-1, 1]^2)")
    num_classes: int = classes_param()
    delta: float = delta_param(help="Perturbation degree: the warp's epsilon in U(-delta/2, delta/2), where 0 "
                                    "reproduces the photo", unit="normalised coordinates")
    size: int = size_param(512)
    canny_sigma: float = param(edges_mod.SIGMA, flag="--canny-sigma", help="Gaussian smoothing before Canny",
                               unit="pixels")
    canny_low: float = param(edges_mod.LOW, flag="--canny-low", help="Canny low threshold",
                             unit="fraction of the largest gradient")
    canny_high: float = param(edges_mod.HIGH, flag="--canny-high", help="Canny high threshold",
                              unit="fraction of the largest gradient")
    elastic_grid: int = param(4, flag="--elastic-grid", help="With --warp elastic: control displacements per side (G)")


def _read_photo(path: str | None) -> tuple[Image.Image, str, str]:
    """(the photo, where it came from, sha256 of its source bytes)."""
    if path is None:
        try:
            from skimage import data
        except ImportError:
            raise UserError("--image is required: the default photo (skimage.data.camera) comes with "
                            "scikit-image, which is not installed") from None
        pixels = np.ascontiguousarray(data.camera())
        return Image.fromarray(pixels), DEFAULT_PHOTO, hashlib.sha256(pixels.tobytes()).hexdigest()
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        photo = Image.open(io.BytesIO(raw))
        photo.load()
    except OSError as error:
        unreadable = isinstance(error, UnidentifiedImageError)
        reason = "not an image Pillow can read" if unreadable else error.strerror or error
        raise UserError(f"cannot read --image {path}: {reason}") from None
    return photo, path, hashlib.sha256(raw).hexdigest()


def load_base(p: RealImageParams) -> tuple[np.ndarray, dict]:
    """The photo as the warps see it: uint8 (size, size) gray (edges, or a gray
    photo) or (size, size, 3) RGB; and its provenance for the manifest."""
    photo, source, digest = _read_photo(p.image)
    gray = p.edges == "canny" or photo.mode in ("1", "L", "LA", "I", "I;16", "F")
    photo = photo.convert("L" if gray else "RGB")
    side = min(photo.size)
    left, top = (photo.width - side) // 2, (photo.height - side) // 2
    photo = photo.crop((left, top, left + side, top + side))
    if side != p.size:
        photo = photo.resize((p.size, p.size), Image.Resampling.LANCZOS)
    base = np.asarray(photo, dtype=np.uint8).copy()
    return base, {"image_source": source, "image_sha256": digest,
                  "base_sha256": hashlib.sha256(base.tobytes()).hexdigest(), "base_shape": list(base.shape)}


class RealImage(OneImagePerClass):
    kind = "real-image"
    Params = RealImageParams
    summary = "one photo (Canny edges by default); a class is one perturbed warp of it"

    @classmethod
    def validate(cls, p: RealImageParams) -> None:
        if p.edges not in EDGES:
            raise UserError(f"--edges must be one of {', '.join(EDGES)}, got {p.edges!r}")
        if p.warp not in warps.WARPS:
            raise UserError(f"--warp must be one of {', '.join(warps.WARPS)}, got {p.warp!r}")
        if p.num_classes < 1:
            raise UserError(f"--L must be >= 1, got {p.num_classes}")
        if not 0 <= p.delta < 2:
            raise UserError(f"--delta must lie in [0, 2) for real-image (0 reproduces the photo), got {p.delta}")
        if p.size < 8:
            raise UserError(f"--size must be >= 8, got {p.size}")
        if not p.canny_sigma > 0:
            raise UserError(f"--canny-sigma must be > 0, got {p.canny_sigma}")
        if not 0 <= p.canny_low <= p.canny_high <= 1:
            raise UserError(f"--canny-low and --canny-high must satisfy 0 <= low <= high <= 1, "
                            f"got {p.canny_low} and {p.canny_high}")
        if p.elastic_grid < 2:
            raise UserError(f"--elastic-grid must be >= 2, got {p.elastic_grid}")

    @classmethod
    def prepare(cls, params: RealImageParams, seed: int, log: ProgressCallback, workers: int | None = None) -> dict:
        _, provenance = load_base(params)
        log(f"real-image: {provenance['image_source']} as {'x'.join(map(str, provenance['base_shape']))}")
        return {**provenance, "coordinates": warps.COORDINATES, "warp_definition": warps.WARP_DOC[params.warp],
                "epsilon_shape": list(warps.epsilon_shape(params.warp, params.elastic_grid)),
                "edges_definition": ("Canny after the warp: Gaussian sigma canny_sigma, Sobel, non-maximum "
                                     "suppression, hysteresis at canny_low / canny_high x the largest gradient; "
                                     "edges 255 on 0") if params.edges == "canny" else "none: the warped photo"}

    def __init__(self, params: RealImageParams, seed: int, system: dict):
        super().__init__(params, seed, system)
        self.base, provenance = load_base(params)
        if provenance["base_sha256"] != system["base_sha256"]:
            raise UserError(f"--image {provenance['image_source']} is not the photo this data set was built from "
                            f"(its pixels' sha256 differs from the manifest's)")

    def finish(self, image: np.ndarray) -> np.ndarray:
        p = self.params
        return edges_mod.canny(image, p.canny_sigma, p.canny_low, p.canny_high) if p.edges == "canny" else image

    def render(self, index: int) -> Sample:
        p = self.params
        shape = warps.epsilon_shape(p.warp, p.elastic_grid)
        epsilon = seeds.rng(self.seed, seeds.SAMPLE, index).uniform(-p.delta / 2.0, p.delta / 2.0, size=shape)
        image = self.finish(warps.warp_image(self.base, p.warp, epsilon))
        return Sample(image=image, label=index, record={"epsilon": epsilon.tolist()})

    def streams(self) -> dict[str, str]:
        rows, columns = warps.epsilon_shape(self.params.warp, self.params.elastic_grid)
        return {"class": seeds.STREAM_DOC["sample"] + f": epsilon = uniform(-delta/2, delta/2, ({rows}, {columns}))"}
