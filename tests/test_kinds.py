"""The other kinds (fractaldb, ofdb, rcdb, visualatom, noise, real-image):
each builds through the shared pipeline, verifies (deep), is deterministic,
resumes, rejects bad input, and has its defining property."""

from __future__ import annotations

import itertools
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from fracbuild import ifs, render, seeds, shards
from fracbuild import manifest as mf
from fracbuild.build import BuildSpec, run_build
from fracbuild.cli import main
from fracbuild.errors import UserError
from fracbuild.generators import get_kind
from fracbuild.generators.contour import CONTINUOUS, contours
from fracbuild.generators.contour.perlin import BOUND, PERMUTATION, noise1
from fracbuild.generators.fractaldb import search as fractaldb_search
from fracbuild.generators.realimage import edges, warps
from fracbuild.location import Location
from fracbuild.preview import write_preview
from fracbuild.verify import verify

SEARCH = {"size": 48, "pad": 2, "iterations": 2000, "search_size": 64, "search_iterations": 3000}
TINY = {
    "fractaldb": {"num_categories": 2, "repeats": 1, "instances": 8, **SEARCH},
    "ofdb": {"num_categories": 3, **SEARCH},
    "rcdb": {"num_categories": 2, "instances": 3, "size": 48},
    "rcdb-lpce": {"lpce": True, "num_classes": 4, "size": 48},
    "visualatom": {"num_categories": 2, "instances": 3, "size": 48},
    "visualatom-lpce": {"lpce": True, "num_classes": 4, "delta": 0.3, "size": 48},
    "noise": {"num_classes": 4, "size": 32},
    "noise-uniform": {"distribution": "uniform", "num_classes": 4, "size": 32},
    "real-image": {"num_classes": 4, "size": 48},  # "image" added by the photo fixture
}
EXPECTED = {  # (samples, classes)
    "fractaldb": (16, 2), "ofdb": (3, 3), "rcdb": (6, 2), "rcdb-lpce": (4, 4), "visualatom": (6, 2),
    "visualatom-lpce": (4, 4), "noise": (4, 4), "noise-uniform": (4, 4), "real-image": (4, 4),
}


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    """A small synthetic RGB photo (a bright disk and a bar on a gradient)."""
    y, x = np.mgrid[0:80, 0:100]
    image = np.stack([x * 2, y * 3, np.full_like(x, 60)], axis=-1).astype(np.float64)
    image[(x - 40) ** 2 + (y - 40) ** 2 < 400] = 250
    image[50:60, 60:95] = 20
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(path)
    return str(path)


def params_for(case: str, photo: str) -> tuple[str, dict]:
    kind = case.removesuffix("-lpce").removesuffix("-uniform")
    params = dict(TINY[case])
    if kind == "real-image":
        params["image"] = photo
    return kind, params


def build(kind: str, out, params: dict, seed: int = 0, shard_size: int = 4, **options) -> dict:
    spec = BuildSpec(kind=kind, seed=seed, params=params, prefix="t", shard_size=shard_size)
    return run_build(spec, str(out), workers=1, progress=False, log=lambda m: None, **options)


def generator(kind: str, params: dict, seed: int = 0):
    cls = get_kind(kind)
    p = cls.make_params(params)
    return cls(p, seed, cls.prepare(p, seed, lambda m: None))


# --- the shared pipeline ----------------------------------------------------------
@pytest.mark.parametrize("case", list(TINY))
def test_builds_verifies_deeply_and_is_deterministic(case, photo, tmp_path):
    kind, params = params_for(case, photo)
    first = build(kind, tmp_path / "a", params)
    second = build(kind, tmp_path / "b", params)
    assert (first["num_samples"], first["num_classes"]) == EXPECTED[case]
    assert [s["sha256"] for s in first["shards"]] == [s["sha256"] for s in second["shards"]]
    assert not mf.validation_errors(first)
    manifest, problems = verify(Location(str(tmp_path / "a")), deep=first["num_samples"])
    assert problems == []
    labels = [s.label for shard in manifest["shards"] for s in shards.read_shard(str(tmp_path / "a" / shard["file"]))]
    per_class = first["num_samples"] // first["num_classes"]
    assert manifest["samples_per_class"] == per_class
    assert labels == [i // per_class for i in range(first["num_samples"])]  # category-major
    assert ("classes" in manifest) == (per_class == 1)  # a class's record where a class is one sample
    assert manifest["kind"] == kind and manifest["streams"]
    assert build(kind, tmp_path / "c", params, seed=1)["shards"][0]["sha256"] != first["shards"][0]["sha256"]


@pytest.mark.parametrize("case", ["fractaldb", "visualatom", "real-image"])
def test_an_interrupted_build_resumes_to_the_same_bytes(case, photo, tmp_path):
    kind, params = params_for(case, photo)
    clean = build(kind, tmp_path / "clean", params, shard_size=2)

    def crash(path, result):
        if result.plan.index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(kind, tmp_path / "cut", params, shard_size=2, on_shard=crash)
    assert not os.path.exists(tmp_path / "cut" / mf.MANIFEST_NAME)
    resumed = build(kind, tmp_path / "cut", params, shard_size=2, resume=True)
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in clean["shards"]]
    timing = {"search_seconds"}
    assert {k: v for k, v in resumed["system"].items() if k not in timing} == \
        {k: v for k, v in clean["system"].items() if k not in timing}


@pytest.mark.parametrize("case", ["fractaldb", "rcdb", "real-image"])
def test_preview_draws_a_contact_sheet(case, photo, tmp_path):
    kind, params = params_for(case, photo)
    if kind == "real-image":
        params["edges"] = "none"  # RGB samples
    manifest = build(kind, tmp_path / "d", params)
    write_preview(Location(str(tmp_path / "d")), str(tmp_path / "p.png"), 4, 32)
    with Image.open(tmp_path / "p.png") as sheet:  # one column per class, not per sample
        assert sheet.width == min(4, manifest["num_classes"]) * 32


def test_the_schema_requires_each_kinds_records(photo, tmp_path):
    manifest = build("fractaldb", tmp_path / "f", TINY["fractaldb"])
    broken = json.loads(json.dumps(manifest))
    del broken["system"]["categories"]
    problems = " ".join(mf.validation_errors(broken))
    assert "categories" in problems
    lpce = build("rcdb", tmp_path / "r", TINY["rcdb-lpce"])
    del lpce["classes"][0]["epsilon"]
    assert any("epsilon" in p for p in mf.validation_errors(lpce))


# --- FractalDB and OFDB --------------------------------------------------------------
def test_fractaldb_categories_are_the_first_candidates_filling_20_percent():
    p = {"size": 64, "pad": 2, "iterations": 3000, "threshold": 0.2}
    found = fractaldb_search.search(4, stream="seeded", seed=3, iterations=p["iterations"], size=p["size"],
                                    pad=p["pad"], threshold=p["threshold"], max_candidates=10_000,
                                    log=lambda m: None, threads=2)
    accepted = [c["candidate"] for c in found["categories"]]
    fills = []
    for index in range(found["candidates_tried"]):  # the reference path: chaos_game + one pixel per point
        maps, uniforms = fractaldb_search.seeded_candidate(3, index, p["iterations"])
        fills.append(fractaldb_search.point_fill(maps, uniforms, p["size"], p["pad"]))
    assert accepted == [i for i, fill in enumerate(fills) if fill >= 0.2]
    for category in found["categories"]:
        assert category["fill_rate"] >= 0.2 and 2 <= len(category["maps"]) <= 7
        assert np.abs(np.asarray(category["maps"])).max() <= 1
        det = [abs(a * d - b * c) for a, b, c, d, _, _ in category["maps"]]
        assert np.allclose(category["probabilities"], np.array(det) / sum(det))


def test_the_fused_search_kernel_matches_the_reference_path():
    stream = fractaldb_search.legacy_candidates(1, 4000)
    for _ in range(60):  # includes diverging systems (parameters in U(-1, 1), no contractivity check)
        maps, uniforms = next(stream)
        assert fractaldb_search.candidate_fill(maps, uniforms, 64, 3) == fractaldb_search.point_fill(maps, uniforms,
                                                                                                     64, 3)


def test_legacy_search_stream_follows_the_released_draw_order():
    maps, uniforms = next(fractaldb_search.legacy_candidates(1, 10))
    legacy = np.random.RandomState(1)
    n_maps = legacy.randint(2, 8)
    expected = np.array([legacy.uniform(-1.0, 1.0, 6) for _ in range(n_maps)])
    assert np.array_equal(maps, expected) and np.array_equal(uniforms, legacy.random_sample(10))


def test_legacy_search_reproduces_the_released_categories():
    """--search-stream legacy --seed 1 at the released settings: a full
    1,000-category run gives 231, 294, 218, 146, 77, 34 categories of 2..7
    maps from 42,655 candidates, the released FractalDB-1k counts
    (benchmarks/RESULTS.md). Here: its first five categories."""
    found = fractaldb_search.search(5, stream="legacy", seed=1, iterations=100_000, size=512, pad=6, threshold=0.2,
                                    max_candidates=1000, log=lambda m: None, threads=2)
    assert [c["candidate"] for c in found["categories"]] == [23, 28, 67, 87, 94]
    assert [len(c["maps"]) for c in found["categories"]] == [5, 3, 2, 5, 4]
    assert found["categories"][0]["maps"][0][0] == pytest.approx(0.17242232431712345, rel=1e-15)


def test_one_pixel_per_point_raster():
    xs = np.array([0.0, 1.0, 0.5, 0.5])
    ys = np.array([0.0, 1.0, 0.25, 0.25])  # a repeated point is one pixel
    image = fractaldb_search.rasterize_points(xs, ys, 4, 12, 1, 127)
    assert set(np.unique(image)) == {0, 127} and np.count_nonzero(image) == 3
    assert image[1, 1] == 127 and image[11, 11] == 127 and image[3, 6] == 127  # int(v / extent * 10 + 1)


def test_fractaldb_has_1000_instances_from_25_rows_10_repeats_4_flips():
    cls = get_kind("fractaldb")
    gen = cls(cls.make_params({}), 0, {"categories": [], "weights": fractaldb_search.weight_table(0.4).tolist()})
    assert gen.per_category == 1000
    combos = [gen.instance(j)[1:] for j in range(1000)]
    assert sorted(combos) == list(itertools.product(range(25), range(10), range(4)))
    assert combos[:5] == [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 3), (0, 1, 0)]
    assert gen.instance(1000) == (1, 0, 0, 0)
    # the released weights_0.4.csv, row by row
    released = [[0.2, 1, 1, 1, 1, 1], [0.6, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [1.4, 1, 1, 1, 1, 1],
                [1.8, 1, 1, 1, 1, 1]]
    for parameter in range(1, 6):
        for factor in (0.2, 0.6, 1.4, 1.8):
            released.append([factor if j == parameter else 1 for j in range(6)])
    assert fractaldb_search.weight_table(0.4).tolist() == released  # exactly: 0.2, not 0.19999999999999996
    names = fractaldb_search.describe_weight_rows(0.4)
    assert names[:6] == ["a x 0.2", "a x 0.6", "identity", "a x 1.4", "a x 1.8", "b x 0.2"]
    assert names[-1] == "f x 1.8" and len(names) == 25
    assert fractaldb_search.weight_table(0.1)[:5, 0].tolist() == [0.8, 0.9, 1.0, 1.1, 1.2]


def test_fractaldb_manifest_names_the_weight_rows(tmp_path):
    manifest = build("fractaldb", tmp_path / "f", TINY["fractaldb"])
    assert manifest["system"]["weight_rows"] == fractaldb_search.describe_weight_rows(0.4)
    assert manifest["system"]["weights"] == fractaldb_search.weight_table(0.4).tolist()
    del manifest["system"]["weight_rows"]
    assert any("weight_rows" in p for p in mf.validation_errors(manifest))


def test_fractaldb_renders_weighted_maps_with_shared_chaos_and_flips():
    gen = generator("fractaldb", {"num_categories": 2, "repeats": 2, **SEARCH})
    assert np.array_equal(gen.categories.uniforms, render.legacy_chaos_stream(SEARCH["iterations"]))
    maps = np.asarray(gen.system["categories"][1]["maps"])
    probabilities = np.asarray(gen.system["categories"][1]["probabilities"])
    steps = render.map_sequence(gen.categories.uniforms, probabilities)  # weights do not change p
    for row, repeat in [(0, 0), (6, 1), (24, 0)]:
        first = gen.per_category + 4 * (2 * row + repeat)
        codes = render.draw_mask_codes(seeds.rng(0, seeds.RENDER, 1, 2 * row + repeat), SEARCH["iterations"])
        expected = render.render_ifs(maps * gen.categories.weights[row], steps, SEARCH["size"], SEARCH["pad"], codes)
        views = [gen.render(first + f) for f in range(4)]
        assert [v.record for v in views] == [{"weight_row": row, "repeat": repeat, "flip": f} for f in range(4)]
        assert {v.label for v in views} == {1}
        assert np.array_equal(views[0].image, expected)
        assert np.array_equal(views[1].image, expected[::-1])
        assert np.array_equal(views[2].image, expected[:, ::-1])
        assert np.array_equal(views[3].image, expected[::-1, ::-1])
    assert not np.array_equal(gen.render(gen.per_category).image, gen.render(gen.per_category + 4).image)  # masks


# A category whose a x 1.8 row diverges on the released chaos stream at 2,000 points: first inf at
# step 1982, first NaN in x at 1985 (the identity row stays bounded).
DIVERGING_MAPS = [[-0.31138004239174966, -0.1394025361043334, 0.9321241615681404, 0.12446368445691403,
                   -0.4822708136581355, -0.5166485718113101],
                  [0.7762366413183597, -0.5482611431653512, -0.750890588329433, -0.4233384859848448,
                   0.1722461296254656, 0.10818100434653566]]


def test_fractaldb_cuts_a_diverging_category_by_the_released_rule():
    from test_kernels import cut_by_the_released_rule, full_orbit, released_fill_image

    cls = get_kind("fractaldb")
    params = cls.make_params({"num_categories": 1, "repeats": 1, "size": 48, "pad": 2, "iterations": 2000,
                              "mask": "fill", "chaos_stream": "legacy"})
    maps = np.asarray(DIVERGING_MAPS)
    probabilities = ifs.map_probabilities(maps)
    weights = fractaldb_search.weight_table(0.4)
    gen = cls(params, 0, {"categories": [{"maps": DIVERGING_MAPS, "probabilities": probabilities.tolist()}],
                          "weights": weights.tolist()})
    row = [r for r in range(len(weights)) if weights[r].tolist() == [1.8, 1, 1, 1, 1, 1]][0]
    sample = gen.render(4 * row)
    assert sample.record == {"weight_row": row, "repeat": 0, "flip": 0}
    steps = render.map_sequence(render.legacy_chaos_stream(2000), probabilities)
    with np.errstate(all="ignore"):
        raw_x, raw_y = full_orbit(maps * weights[row], steps)
        expected = released_fill_image(*cut_by_the_released_rule(raw_x, raw_y), 48, 2)
        first_inf = int(np.argmax(~np.isfinite(raw_x) | ~np.isfinite(raw_y)))
        cut_at_inf = released_fill_image(raw_x[:first_inf - 100], raw_y[:first_inf - 100], 48, 2)
    assert (first_inf, int(np.argmax(np.isnan(raw_x)))) == (1982, 1985)
    assert np.array_equal(sample.image, expected)
    assert not np.array_equal(sample.image, cut_at_inf)  # the rule matters here


def test_ofdb_is_one_image_per_category_with_a_scaled_by_0_2():
    gen = generator("ofdb", {"num_categories": 3, **SEARCH})
    assert gen.num_samples() == gen.num_classes() == 3
    assert np.allclose(gen.categories.weights[gen.params.weight_row], [0.2, 1, 1, 1, 1, 1])
    maps = np.asarray(gen.system["categories"][2]["maps"]) * np.array([0.2, 1, 1, 1, 1, 1])
    steps = render.map_sequence(gen.categories.uniforms, np.asarray(gen.system["categories"][2]["probabilities"]))
    codes = render.draw_mask_codes(seeds.rng(0, seeds.RENDER, 2, 0), SEARCH["iterations"])
    sample = gen.render(2)
    assert sample.label == 2
    assert np.array_equal(sample.image, render.render_ifs(maps, steps, SEARCH["size"], SEARCH["pad"], codes))


# --- contours: Perlin noise, RCDB, VisualAtom --------------------------------------
def test_perlin_noise_follows_the_noise_package_rule():
    assert sorted(PERMUTATION.tolist()) == list(range(256))
    # u = 0.5: gradients 8 (h = 151) and 1 (h = 160): lerp(0.5, 4, -0.5) * 0.4
    assert noise1(0.5, PERMUTATION) == pytest.approx(0.7)
    # u = 1.5: h = 137 has bit 8 set, so its gradient is -1 (not -2): lerp(0.5, 0.5, 0.5) * 0.4
    assert noise1(1.5, PERMUTATION) == pytest.approx(0.2)
    u = np.random.default_rng(0).uniform(0, 10_000, 20_000)
    values = np.array([noise1(v, PERMUTATION) for v in u])
    assert np.abs(values).max() <= BOUND and np.abs(values).max() > 0.8
    assert all(noise1(float(k), PERMUTATION) == 0.0 for k in range(300))
    assert noise1(256.5, PERMUTATION) == noise1(0.5, PERMUTATION)  # period 256


def test_lines_are_clipped_never_wrapped():
    big = np.zeros((60, 60), dtype=np.uint8)
    contours.draw_segment(big, 5, 30, 55, 40, 200)
    small = np.zeros((20, 20), dtype=np.uint8)
    contours.draw_segment(small, 5 - 20, 30 - 20, 55 - 20, 40 - 20, 200)  # the same line, 20 px up-left
    assert np.array_equal(small, big[20:40, 20:40])
    assert np.count_nonzero(big) == 51  # 8-connected: one pixel per column
    contours.draw_segment(small, -10**6, -5, 10**6, -5, 9)  # far off, entirely above
    assert not (small == 9).any()


@pytest.mark.parametrize("kind", ["rcdb", "visualatom"])
def test_contours_stay_inside_the_canvas(kind):
    """A drawing whose contours grow past the border equals the middle of
    the same drawing on a canvas three times as wide: nothing is wrapped
    or lost at the border, and nothing outside it is written."""
    gen = generator(kind, {"num_categories": 40, "instances": 1, "size": 64})
    spilled = 0
    for index in range(40):
        scalars, instance, _ = gen.sample_inputs(index)
        values = gen.continuous(scalars, instance)
        image = gen.draw(scalars, instance, values)
        wide = gen.draw(scalars, instance, values, canvas=192, origin=64)
        assert image.shape == (64, 64)
        assert np.array_equal(image, wide[64:128, 64:128])
        outside = wide.copy()
        outside[64:128, 64:128] = gen.background
        spilled += bool((outside != gen.background).any())
    assert spilled >= 10  # the check is not vacuous: many drawings reach past the border


def test_rcdb_category_draws():
    cls = get_kind("rcdb")
    for c in range(300):
        s = cls.draw_category(seeds.rng(5, seeds.CATEGORY, c))
        assert 3 <= s["vertices"] <= 200 and 1 <= s["contours"] <= 200
        assert 0 <= s["amplitude"] < 4 and 0 <= s["drift"] < 0.1
    gen = generator("rcdb", {"num_categories": 2, "instances": 2, "size": 64})
    _, a, _ = gen.sample_inputs(0)
    _, b, _ = gen.sample_inputs(1)  # r0, ovals, centre and noise are redrawn per instance
    assert a["centre"] != b["centre"] and not np.array_equal(a["noise_u"], b["noise_u"])
    assert 0 <= a["radius"] <= 100 and 1 <= a["oval_x"] < 2 and all(56 <= v <= 456 for v in a["centre"])
    assert gen.render(0).image[0, 0] in (255, *a["grays"])  # white canvas


def test_visualatom_sinusoid_frequencies():
    cls = get_kind("visualatom")
    gen = generator("visualatom", {"num_categories": 1, "instances": 1, "size": 64})
    seen = set()
    for c in range(300):
        s = cls.draw_category(seeds.rng(7, seeds.CATEGORY, c))
        n1, n2 = s["frequency_1"], s["frequency_2"]
        assert 0 <= n1 <= 20 and 0 <= n2 <= 20 and (n1 != n2 or n1 == 0)
        assert 200 <= s["vertices"] <= 1000 and 10 <= s["radius"] <= 60
        seen.add(n1)
        # the sinusoids subtracted from the noise, 0.5 sin(n1 t) + 0.5 sin(n2 t): their spectrum over
        # the K vertices has exactly the lines n1 and n2
        assert gen.frequencies(s) == (n1, n2)
        waves = sum(contours.sinusoid(s["vertices"], n) for n in gen.frequencies(s))
        spectrum = np.abs(np.fft.rfft(waves))
        expected = np.zeros_like(spectrum)
        for n in (n1, n2):
            expected[n] += s["vertices"] / 4
        expected[0] = 0.0
        assert np.allclose(spectrum, expected, atol=1e-6)
    assert len(seen) == 21


def test_visualatom_instances_draw_their_own_grays_noise_and_centre():
    gen = generator("visualatom", {"num_categories": 2, "instances": 3, "size": 64})
    (s, a, label_a), (_, b, label_b) = gen.sample_inputs(3), gen.sample_inputs(4)
    assert label_a == label_b == 1
    assert not np.array_equal(a["grays"], b["grays"]) and not np.array_equal(a["noise_u"], b["noise_u"])
    assert a["centre"] != b["centre"]
    assert {k: a[k] for k in ("radius", "oval_x", "oval_y")} == {k: s[k] for k in ("radius", "oval_x", "oval_y")}
    # instance 4's draws come from its own stream, in the released order: centre (h, then w), then per
    # contour its gray, the x positions of vertex 0..K-1, the y positions (one uniform each)
    rng = seeds.rng(0, seeds.SAMPLE, 4)
    h, w = rng.integers(-512, 513), rng.integers(-512, 513)
    assert b["centre"] == ((512 + w) / 2, (512 + h) / 2)
    uniforms = rng.random((s["contours"], 2 * s["vertices"] + 1))
    assert np.array_equal(b["grays"], (uniforms[:, 0] * 256).astype(np.uint8))
    assert np.array_equal(b["noise_u"][:, 0], uniforms[:, 1:s["vertices"] + 1] * 10_000)
    assert np.array_equal(b["noise_u"][:, 1], uniforms[:, s["vertices"] + 1:] * 10_000)
    assert np.array_equal(gen.render(4).image, gen.draw(s, b, gen.continuous(s, b)))
    assert not np.array_equal(gen.render(3).image, gen.render(4).image)


def test_rcdb_grays_paint_255_twice_as_often():
    gen = generator("rcdb", {"num_categories": 1, "instances": 1, "size": 64})
    scalars = {"vertices": 3, "contours": 20_000, "amplitude": 1.0, "drift": 0.0}
    grays = gen.draw_instance(np.random.default_rng(0), 0, scalars)["grays"]
    counts = np.bincount(grays, minlength=256)
    assert grays.dtype == np.uint8 and counts.min() > 0
    assert 1.6 < counts[255] / counts[:255].mean() < 2.4  # 256 draws paint 255 (Pillow clamps)


def test_perlin_noise_is_single_precision():
    # near u = 10000 float32 positions are ~0.001 apart: the argument is rounded first ...
    u = 9876.54321
    assert noise1(u, PERMUTATION) == noise1(float(np.float32(u)), PERMUTATION)
    # ... and the value is a float32 widened to float64
    values = [noise1(v, PERMUTATION) for v in np.random.default_rng(1).uniform(0, 10_000, 100)]
    assert all(float(np.float32(v)) == v for v in values)


def test_vertices_are_truncated_toward_zero():
    """A vertex at -0.7 lands on pixel 0, one at 3.9 on 3 (Pillow's int()),
    not on -1/4 (rounding) or -1 (floor)."""
    image = np.zeros((8, 8), dtype=np.uint8)
    x = np.array([-0.7, 3.9, 3.9])
    y = np.array([2.0, 2.0, 5.0])
    zeros = np.zeros(3)
    no_noise = np.zeros((1, 2, 3))
    cos_t = np.zeros(3)  # no growth: the polygon stays where it starts
    contours.grow_contours(image, x, y, cos_t, cos_t, zeros, zeros, 0.0, 0.0, 1.0, 0, np.array([9], np.uint8),
                           no_noise, 0.0, 2.0, 0.0, PERMUTATION)
    assert image[2, 0] == 9 and image[2, 3] == 9 and image[5, 3] == 9 and image[2, 4] == 0


@pytest.mark.parametrize("kind", ["rcdb", "visualatom"])
def test_lpce_perturbs_one_categorys_continuous_parameters(kind):
    gen = generator(kind, {"lpce": True, "num_classes": 3, "delta": 0.2, "category": 5, "size": 64})
    assert gen.system["lpce"] == {"num_classes": 3, "delta": 0.2, "perturbation": "multiplicative", "category": 5}
    assert gen.system["base"] == get_kind(kind).draw_category(seeds.rng(0, seeds.CATEGORY, 5))
    assert gen.system["perturbed"] == list(CONTINUOUS)
    base = gen.lpce_base()
    images = []
    for index in range(3):
        sample = gen.render(index)
        epsilon = np.asarray(sample.record["epsilon"])
        assert epsilon.shape == (1, 5) and np.all(np.abs(epsilon - 1) <= 0.2) and sample.label == index
        values = gen.continuous(gen.system["base"], base) * epsilon[0]
        assert np.array_equal(sample.image, gen.draw(gen.system["base"], base, values))
        images.append(sample.image)
    assert not np.array_equal(images[0], images[1])


# --- noise -------------------------------------------------------------------------
def test_gaussian_noise_statistics_and_shared_field():
    gen = generator("noise", {"num_classes": 3, "size": 256, "mean": 0.5, "std": 0.1, "delta": 0.3})
    standardised = []
    for index in range(3):
        sample = gen.render(index)
        mean, std = np.array([[0.5, 0.1]])[0] * np.asarray(sample.record["epsilon"])[0]
        values = sample.image.astype(np.float64)
        assert values.mean() == pytest.approx(255 * mean, abs=0.5)
        assert values.std() == pytest.approx(255 * std, rel=0.02)
        standardised.append((values - values.mean()) / values.std())
    assert np.corrcoef(standardised[0].ravel(), standardised[2].ravel())[0, 1] > 0.999  # one field


def test_uniform_noise_statistics():
    gen = generator("noise", {"distribution": "uniform", "num_classes": 2, "size": 256, "low": 0.2, "high": 0.6})
    for index in range(2):
        sample = gen.render(index)
        low, high = np.array([0.2, 0.6]) * np.asarray(sample.record["epsilon"])[0]
        values = sample.image.astype(np.float64)
        assert values.min() == np.rint(255 * low) or values.min() == np.rint(255 * low) + 1
        assert abs(values.max() - 255 * high) <= 1
        assert values.mean() == pytest.approx(255 * (low + high) / 2, abs=0.5)
        assert values.std() == pytest.approx(255 * (high - low) / np.sqrt(12), rel=0.02)


# --- real image ----------------------------------------------------------------------
@pytest.mark.parametrize("warp", ["affine", "polynomial", "elastic"])
@pytest.mark.parametrize("edges_mode", ["canny", "none"])
def test_zero_delta_reproduces_the_image(warp, edges_mode, photo):
    gen = generator("real-image", {"image": photo, "delta": 0.0, "warp": warp, "edges": edges_mode,
                                   "num_classes": 3, "size": 64})
    expected = gen.finish(gen.base)
    assert gen.base.shape == ((64, 64) if edges_mode == "canny" else (64, 64, 3))
    if edges_mode == "canny":
        assert np.count_nonzero(expected) > 50
    for index in range(3):
        assert np.array_equal(gen.render(index).image, expected)


def test_affine_translation_moves_the_image_by_whole_pixels():
    image = np.random.default_rng(0).integers(0, 256, (32, 32)).astype(np.uint8)
    epsilon = np.array([[0, 0, 2 * 3 / 32], [0, 0, -2 * 2 / 32]])  # sample 3 px right and 2 px up
    moved = warps.warp_image(image, "affine", epsilon)
    assert np.array_equal(moved[2:, :-3], image[:-2, 3:])
    assert np.array_equal(moved[:2, :-3], np.repeat(image[:1, 3:], 2, axis=0))  # edges are extended


def test_warps_perturb_the_image(photo):
    for warp in ("affine", "polynomial", "elastic"):
        gen = generator("real-image", {"image": photo, "warp": warp, "edges": "none", "num_classes": 2,
                                       "size": 64, "delta": 0.2})
        a, b = gen.render(0), gen.render(1)
        assert np.asarray(a.record["epsilon"]).shape == warps.epsilon_shape(warp, 4)
        assert not np.array_equal(a.image, b.image) and not np.array_equal(a.image, gen.base)


def test_canny_finds_the_outline_of_a_square():
    image = np.zeros((40, 40), dtype=np.uint8)
    image[10:30, 12:32] = 200
    found = edges.canny(image, sigma=1.0)
    ys, xs = np.nonzero(found)
    distance = np.minimum(np.minimum(np.abs(ys - 9.5), np.abs(ys - 29.5)),
                          np.minimum(np.abs(xs - 11.5), np.abs(xs - 31.5)))
    assert len(ys) > 60 and distance.max() <= 1.5
    assert not edges.canny(np.full((20, 20), 90, dtype=np.uint8)).any()


def test_default_photo_and_a_missing_scikit_image(monkeypatch):
    pytest.importorskip("skimage")
    gen = generator("real-image", {"num_classes": 1, "size": 32})
    assert gen.system["image_source"] == "skimage.data.camera"
    monkeypatch.setitem(__import__("sys").modules, "skimage", None)
    with pytest.raises(UserError, match="--image is required"):
        generator("real-image", {"num_classes": 1, "size": 32})


def test_a_changed_photo_is_refused(photo, tmp_path):
    copy = tmp_path / "photo.png"
    shutil.copy(photo, copy)
    gen = generator("real-image", {"image": str(copy), "num_classes": 1, "size": 32})
    Image.fromarray(np.zeros((50, 50), dtype=np.uint8)).save(copy)
    with pytest.raises(UserError, match="not the photo"):
        get_kind("real-image")(gen.params, 0, gen.system)


# --- bad input -----------------------------------------------------------------------
BAD = [
    ("fractaldb", {"num_categories": 0}, "--categories"),
    ("fractaldb", {"instances": 1001}, "--instances"),
    ("fractaldb", {"repeats": 0}, "--repeats"),
    ("fractaldb", {"weight_step": 0.5}, "--weight-step"),
    ("fractaldb", {"threshold": 0.0}, "--threshold"),
    ("fractaldb", {"size": 10, "pad": 6}, "--size"),
    ("fractaldb", {"search_stream": "numpy"}, "--search-stream"),
    ("fractaldb", {"sigma": 3.5}, "no option(s) sigma"),
    ("ofdb", {"weight_row": 25}, "--weight-row"),
    ("ofdb", {"instances": 4}, "no option(s) instances"),
    ("rcdb", {"num_classes": 5}, "--L needs --lpce"),
    ("rcdb", {"lpce": True, "delta": 0.0}, "--delta"),
    ("rcdb", {"lpce": True, "delta": 1.0}, "--delta"),
    ("visualatom", {"lpce": True, "instances": 5}, "--instances"),
    ("visualatom", {"instances": 0}, "--instances"),
    ("visualatom", {"size": 4}, "--size"),
    ("noise", {"distribution": "pink"}, "--noise"),
    ("noise", {"std": 0.0}, "--noise-std"),
    ("noise", {"low": 0.5, "high": 0.5}, "--noise-low"),
    ("noise", {"delta": 0.0}, "--delta"),
    ("real-image", {"delta": -0.1}, "--delta"),
    ("real-image", {"warp": "twist"}, "--warp"),
    ("real-image", {"edges": "sobel"}, "--edges"),
    ("real-image", {"canny_low": 0.5, "canny_high": 0.2}, "--canny-low"),
    ("real-image", {"elastic_grid": 1}, "--elastic-grid"),
]


@pytest.mark.parametrize("kind,params,fragment", BAD)
def test_bad_input_is_a_user_error(kind, params, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        get_kind(kind).make_params(params)


def test_unreadable_photo_is_a_user_error(tmp_path):
    (tmp_path / "not.png").write_text("hello")
    for path in (str(tmp_path / "not.png"), str(tmp_path / "missing.png")):
        with pytest.raises(UserError, match="cannot read --image"):
            generator("real-image", {"image": path})


def test_a_search_that_runs_out_of_candidates_fails_the_build(tmp_path):
    from fracbuild.errors import BuildFailure
    params = {**TINY["ofdb"], "threshold": 1.0, "max_candidates": 40}
    with pytest.raises(BuildFailure, match="only 0 of 3 categories in 40 candidates"):
        build("ofdb", tmp_path / "o", params)
    assert not os.path.exists(tmp_path / "o")


def test_legacy_search_needs_a_32_bit_seed():
    cls = get_kind("ofdb")
    with pytest.raises(UserError, match="--seed"):
        cls.prepare(cls.make_params({"search_stream": "legacy"}), 2**40, lambda m: None)


# --- the command line --------------------------------------------------------------------
def test_cli_renders_each_kind_and_rejects_bad_options(tmp_path, photo, capsys):
    common = ["--no-progress", "--workers", "1", "--shard-size", "2"]
    assert main(["render", "--kind", "noise", "--L", "3", "--size", "16", "--out", str(tmp_path / "n"), *common]) == 0
    assert main(["verify", str(tmp_path / "n"), "--deep", "3", "--no-progress"]) == 0
    assert main(["render", "--kind", "visualatom", "--lpce", "--L", "2", "--delta", "0.2", "--size", "32",
                 "--out", str(tmp_path / "v"), *common]) == 0
    assert main(["render", "--kind", "ofdb", "--categories", "2", "--size", "32", "--pad", "2", "--iterations",
                 "1000", "--search-size", "48", "--search-iterations", "2000", "--out", str(tmp_path / "o"),
                 *common]) == 0
    assert main(["render", "--kind", "real-image", "--image", photo, "--L", "2", "--delta", "0", "--size", "32",
                 "--warp", "elastic", "--out", str(tmp_path / "r"), *common]) == 0
    assert json.loads((tmp_path / "v" / mf.MANIFEST_NAME).read_text())["params"]["lpce"] is True
    capsys.readouterr()
    for argv in (["--kind", "rcdb", "--L", "5"], ["--kind", "fractaldb", "--sigma", "3"],
                 ["--kind", "noise", "--noise", "pink"], ["--kind", "real-image", "--delta", "-1"],
                 ["--kind", "fractaldb", "--categories", "0"], ["--kind", "visualatom", "--lpce", "--delta", "2"]):
        assert main(["render", *argv, "--out", str(tmp_path / "bad")]) == 2
        assert capsys.readouterr().err.startswith("error: ")
    assert not os.path.exists(tmp_path / "bad")


def test_fractaldb_search_follows_workers_and_does_not_depend_on_them(monkeypatch):
    """--workers bounds the search's threads; the categories are the same."""
    seen = []
    real_search = fractaldb_search.search

    def spy(*args, **kwargs):
        seen.append(kwargs.get("threads"))
        return real_search(*args, **kwargs)

    monkeypatch.setattr(fractaldb_search, "search", spy)
    cls = get_kind("ofdb")
    params = cls.make_params({"num_categories": 3, "search_size": 64, "search_iterations": 3000, "size": 32,
                              "iterations": 2000})
    one = cls.prepare(params, 5, lambda m: None, workers=1)
    two = cls.prepare(params, 5, lambda m: None, workers=2)
    assert seen == [1, 2]
    assert one["categories"] == two["categories"]
