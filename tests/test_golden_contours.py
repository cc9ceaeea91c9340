"""RCDB and VisualAtom draw, pixel for pixel, what the released generators
drew from the same values (tests/golden/rcdb-replay, visualatom-replay: every
value each released image consumed, in order, and its PNG)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracbuild.generators import get_kind
from fracbuild.generators.contour import painted_grays
from fracbuild.generators.contour.perlin import PERMUTATION

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = {kind: sorted((GOLDEN / f"{kind}-replay").glob("case*.json")) for kind in ("rcdb", "visualatom")}
ALL_CASES = [path for paths in CASES.values() for path in paths]


@pytest.mark.parametrize("kind", sorted(CASES))
def test_replay_cases_are_present(kind):
    # a missing folder must fail, not skip
    assert len(CASES[kind]) == 6, f"expected the replay cases in {GOLDEN / (kind + '-replay')}"


def _inputs(case: dict) -> tuple[dict, dict]:
    """The kind's (category scalars, instance draws) holding the case's values."""
    used = case["values_used"]
    scalars = {"vertices": used["K"], "contours": used["L"], "amplitude": used["c"], "drift": used["w"]}
    if case["kind"] == "visualatom":
        scalars.update(radius=float(used["r0"]), frequency_1=used["n1"], frequency_2=used["n2"],
                       oval_x=used["oval_x"], oval_y=used["oval_y"])
    noise_u = np.array([[c["perlin_x"], c["perlin_y"]] for c in case["contours"]], dtype=np.float64)
    draws = np.array([c["gray"] for c in case["contours"]])
    instance = {"radius": float(used["r0"]), "oval_x": used["oval_x"], "oval_y": used["oval_y"],
                "centre": (used["centre_x"], used["centre_y"]), "grays": painted_grays(draws), "noise_u": noise_u}
    return scalars, instance


@pytest.mark.parametrize("case_path", ALL_CASES, ids=[f"{p.parent.name}-{p.stem}" for p in ALL_CASES])
def test_reproduces_the_released_image(case_path):
    case = json.loads(case_path.read_text())
    assert case["perlin_permutation"] == PERMUTATION.tolist()
    assert (case["image"]["width"], case["image"]["height"]) == (512, 512)
    cls = get_kind(case["kind"])
    generator = cls(cls.make_params({"num_categories": 1, "instances": 1, "size": 512}), 0, {"categories": []})
    scalars, instance = _inputs(case)
    assert instance["noise_u"].shape == (scalars["contours"], 2, scalars["vertices"])
    image = generator.draw(scalars, instance, generator.continuous(scalars, instance))

    expected = np.asarray(Image.open(case_path.parent / case["png"]))
    assert (expected == expected[..., :1]).all()  # R = G = B
    expected = expected[..., 0]
    assert expected[0, 0] in (generator.background, *instance["grays"])
    differ = int(np.count_nonzero(image != expected))
    assert differ == 0, f"{differ} pixels differ from the released image"
    assert int(np.count_nonzero(image != generator.background)) == case["summary"]["drawn_pixels"]


def test_a_gray_draw_of_256_paints_white():
    assert painted_grays(np.array([0, 255, 256])).tolist() == [0, 255, 255]
    case = json.loads((GOLDEN / "rcdb-replay" / "case02.json").read_text())
    assert case["summary"]["gray_draws_of_256"] == 3  # the replay cases exercise it
