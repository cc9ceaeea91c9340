"""The renderer reproduces, pixel for pixel, images rendered by the paper's
released code from the same inputs (tests/golden/reference-render, a copy of
../shared/golden/reference-render)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED
from fracbuild import render

GOLDEN = Path(__file__).resolve().parent / "golden" / "reference-render"
SHARED_GOLDEN = SHARED / "golden" / "reference-render"
CASES = sorted(GOLDEN.glob("case*.json"))


def test_golden_cases_are_present():
    # The cases live in the repository: a missing folder must fail, not skip.
    assert len(CASES) >= 6, f"expected the golden cases in {GOLDEN}"
    for case_path in CASES:
        assert (GOLDEN / json.loads(case_path.read_text())["expected_png"]).is_file()


@pytest.mark.skipif(not SHARED_GOLDEN.is_dir(), reason=f"no {SHARED_GOLDEN} beside this clone")
def test_repository_copy_matches_shared_golden_set():
    shared = sorted(p.name for p in SHARED_GOLDEN.glob("case*"))
    assert shared, f"{SHARED_GOLDEN} holds no cases"
    assert sorted(p.name for p in GOLDEN.glob("case*")) == shared
    for name in shared:
        assert (GOLDEN / name).read_bytes() == (SHARED_GOLDEN / name).read_bytes(), name


def _mask_seed(description: str) -> int:
    # "numpy.random.default_rng(501).integers(1, 512, size=100000); ..."
    return int(description.split("default_rng(")[1].split(")")[0])


@pytest.mark.parametrize("case_path", CASES, ids=[p.stem for p in CASES])
def test_reproduces_reference_render(case_path):
    case = json.loads(case_path.read_text())
    assert case["chaos_stream"].startswith("numpy.random.seed(100)")
    iterations = case["iterations"]
    maps = np.asarray(case["base_maps"]) * np.asarray(case["weights"])  # multiplicative weights
    steps = render.map_sequence(render.legacy_chaos_stream(iterations), np.asarray(case["probabilities"]))
    codes = None
    if case["mask_mode"] == "random":
        codes = np.random.default_rng(_mask_seed(case["mask_stream"])).integers(1, 512, size=iterations)
        codes = codes.astype(np.int16)
    image = render.render_ifs(maps, steps, case["image_size"], case["pad"], codes)

    expected = np.asarray(Image.open(GOLDEN / case["expected_png"]))
    if expected.ndim == 3:  # the released code writes three equal channels
        assert (expected == expected[..., :1]).all()
        expected = expected[..., 0]
    assert image.shape == expected.shape
    differ = int(np.count_nonzero(image != expected))
    assert differ == 0, f"{differ} pixels differ from the reference"
    assert render.fill_rate(image) == case["expected_fill_rate"]


def test_legacy_stream_matches_numpy_global_seed():
    state = np.random.get_state()
    try:
        np.random.seed(100)
        expected = np.random.random(1000)
    finally:
        np.random.set_state(state)
    assert np.array_equal(render.legacy_chaos_stream(1000), expected)
