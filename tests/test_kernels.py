"""The chaos-game and raster kernels on inputs whose answer is known."""

from __future__ import annotations

import numpy as np

from fracbuild import kernels, render

SIERPINSKI = np.array([  # three half-scale maps onto the corners of the unit triangle
    [0.5, 0, 0, 0.5, 0.0, 0.0],
    [0.5, 0, 0, 0.5, 0.5, 0.0],
    [0.5, 0, 0, 0.5, 0.25, 0.5],
])


def test_chaos_game_stays_on_the_sierpinski_triangle():
    rng = np.random.default_rng(0)
    steps = render.map_sequence(rng.random(20000), np.full(3, 1 / 3))
    xs, ys = kernels.chaos_game(SIERPINSKI, steps)
    assert xs.shape == (20000,) and xs[0] == 0 and ys[0] == 0
    # every point lies in the triangle (0,0), (1,0), (0.5,1) ...
    assert np.all(ys >= 0) and np.all(ys <= 2 * xs + 1e-12) and np.all(ys <= 2 * (1 - xs) + 1e-12)
    # ... and never in the removed middle triangle (after a few steps to settle)
    x, y = xs[20:], ys[20:]
    in_hole = (y > 0.5 * 1e-9 + 0) & (y < 0.5) & (y > 2 * (x - 0.5) + 1e-9) & (y > 2 * (0.5 - x) + 1e-9)
    assert not np.any(in_hole & (y > 1e-6))


def test_map_sequence_picks_first_cumulative_bound():
    p = np.array([0.25, 0.75])
    steps = render.map_sequence(np.array([0.0, 0.25, 0.2500001, 0.9999, 0.5]), p)
    assert steps.tolist() == [0, 0, 1, 1]  # the last uniform is unused (T points, T-1 steps)


def test_step_past_the_last_map_keeps_the_point():
    maps = np.array([[0.5, 0, 0, 0.5, 1.0, 1.0]])
    xs, ys = kernels.chaos_game(maps, np.array([0, 1, 0], dtype=np.uint8))
    assert xs.tolist() == [0.0, 1.0, 1.0, 1.5]


def test_fill_mode_draws_full_patches_at_offset_one():
    xs = np.array([0.0, 1.0])
    ys = np.array([0.0, 1.0])
    image = kernels.rasterize(xs, ys, 2, np.zeros(0, np.int16), False, 16, 2)
    flipped = image[::-1]  # undo the final top-bottom flip
    # x = 0 -> pixel 2 (pad), x = 1 -> 2 + 12 = 14; patches start one further
    assert np.all(flipped[3:6, 3:6] == 127)
    assert np.all(flipped[15:, 15:] == 127)  # the second patch is clipped at the border
    assert np.count_nonzero(flipped) == 9 + 1


def test_random_mask_bits_and_last_write_wins():
    xs = np.array([0.0, 0.0, 1.0])
    ys = np.array([0.0, 0.0, 1.0])
    # first point sets every cell, the second (same place) keeps only the
    # most significant bit (top-left cell): zero cells overwrite.
    codes = np.array([511, 256, 511], dtype=np.int16)
    image = kernels.rasterize(xs, ys, 3, codes, True, 32, 4)[::-1]
    patch = image[5:8, 5:8]
    assert patch.tolist() == [[127, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_fill_rate_counts_pixels_above_one():
    image = np.array([[0, 1], [2, 127]], dtype=np.uint8)
    assert kernels.fill_rate(image) == 0.5


def test_render_is_bounded_and_deterministic():
    rng = np.random.default_rng(1)
    steps = render.map_sequence(rng.random(5000), np.full(3, 1 / 3))
    codes = render.draw_mask_codes(np.random.default_rng(2), 5000)
    a = render.render_ifs(SIERPINSKI, steps, 64, 3, codes)
    b = render.render_ifs(SIERPINSKI, steps, 64, 3, codes)
    assert a.dtype == np.uint8 and a.shape == (64, 64)
    assert np.array_equal(a, b)
    assert set(np.unique(a)) <= {0, 127}
    rows, cols = np.nonzero(a)
    assert cols.min() >= 3 and cols.max() <= 63  # left pad kept; patches may reach the right edge


def full_orbit(maps, steps):
    """The whole orbit in plain Python floats, nothing cut: float64 (T,) each."""
    x = y = 0.0
    xs, ys = [x], [y]
    for k in steps:
        if k < len(maps):
            a, b, c, d, e, f = maps[k]
            x, y = a * x + b * y + e, c * x + d * y + f
        xs.append(x)
        ys.append(y)
    return np.array(xs), np.array(ys)


def cut_by_the_released_rule(xs, ys):
    """The rule, written out with NumPy: if x has a NaN, delete the 100
    positions before its first NaN and every NaN of x (from both axes); then
    the same on y. Infinite points that are not NaN stay."""
    for axis in (0, 1):
        values = (xs, ys)[axis]
        nans = np.flatnonzero(np.isnan(values))
        if nans.size:
            assert nans[0] > 100, "the released code fails here; not a case of this reference"
            gone = np.concatenate([np.arange(nans[0] - 100, nans[0]), nans])
            xs, ys = np.delete(xs, gone), np.delete(ys, gone)
    return xs, ys


def released_pixels(values, size, pad):
    """The released per-axis mapping: shift by -min if min < 0, divide by
    max - min, scale to size - 2 pad, add pad, cast to an integer; the cast
    of a NaN or infinite coordinate gives 0 (NumPy's uint16 cast)."""
    if values.min() < 0:
        values = values - values.min()
    p = values / (values.max() - values.min()) * float(size - 2 * pad) + float(pad)
    return np.where(np.isfinite(p), p, 0).astype(np.int64)


def released_fill_image(xs, ys, size, pad):
    """Fill-mode patches (3x3 of 127 at pixel + 1, clipped), flipped top to bottom."""
    image = np.zeros((size, size), dtype=np.uint8)
    if xs.size:
        for col, row in zip(released_pixels(xs, size, pad) + 1, released_pixels(ys, size, pad) + 1):
            image[max(row, 0):max(row + 3, 0), max(col, 0):max(col + 3, 0)] = 127
    return image[::-1]


def assert_cut_and_drawn_as_released(maps, steps, size=32, pad=2):
    with np.errstate(all="ignore"):
        raw_x, raw_y = full_orbit(maps, steps)
        want_x, want_y = cut_by_the_released_rule(raw_x, raw_y)
        want_image = released_fill_image(want_x, want_y, size, pad)
    xs, ys, n_valid, bounds = kernels.chaos_game_tracked(maps, steps)
    assert n_valid == len(xs) == len(want_x)
    assert np.array_equal(xs, want_x) and np.array_equal(ys, want_y)  # inf points included
    if n_valid:
        assert bounds.tolist() == [xs.min(), xs.max(), ys.min(), ys.max()]
    image = kernels.rasterize_bounded(xs, ys, n_valid, bounds, np.zeros(0, np.int16), False, size, pad)
    assert np.array_equal(image, want_image)
    assert np.array_equal(image, kernels.rasterize(xs, ys, n_valid, np.zeros(0, np.int16), False, size, pad))
    return raw_x, raw_y, n_valid, image


def test_a_diverging_orbit_is_cut_100_before_its_first_nan_in_x():
    maps = np.array([[2.0, 0, 0, 2.0, 1.0, 1.0]])  # doubles every step: inf after ~1024 steps, then NaN (0 * inf)
    raw_x, raw_y, n_valid, _ = assert_cut_and_drawn_as_released(maps, np.zeros(3000, dtype=np.uint8))
    first_inf = int(np.argmax(~np.isfinite(raw_x) | ~np.isfinite(raw_y)))
    first_nan = int(np.argmax(np.isnan(raw_x)))
    assert 1000 < first_inf < first_nan < first_inf + 4
    assert n_valid == first_nan - 100 > first_inf - 100  # the huge points before the NaN stay


def test_an_orbit_that_reaches_inf_but_never_nan_keeps_every_point():
    maps = np.array([[2.0, 0.1, 0.1, 2.0, 1.0, 1.0]])  # all positive: +inf stays +inf, never inf - inf
    raw_x, _, n_valid, image = assert_cut_and_drawn_as_released(maps, np.zeros(1999, dtype=np.uint8))
    assert n_valid == 2000 and np.isinf(raw_x).sum() > 900 and not np.isnan(raw_x).any()
    # finite points land on the pad (they are 0 of an infinite extent), inf points on 0
    flipped = image[::-1]
    assert flipped[1:4, 1:4].all() and flipped[3:6, 3:6].all() and np.count_nonzero(flipped) == 9 + 9 - 1


def test_a_nan_in_y_alone_is_cut_on_y():
    # y doubles; x follows 0.5 y; once x is inf, y = 0 * x turns NaN one step before x does
    maps = np.array([[1.0, 0.5, 0.0, 2.0, 0.0, 1.0]])
    with np.errstate(all="ignore"):
        raw_x, raw_y = full_orbit(maps, np.zeros(3000, dtype=np.uint8))
    first_y = int(np.argmax(np.isnan(raw_y)))
    assert np.isnan(raw_x[first_y + 1]) and not np.isnan(raw_x[: first_y + 1]).any()
    steps = np.zeros(first_y, dtype=np.uint8)  # the orbit ends on the y NaN: x has none
    _, _, n_valid, _ = assert_cut_and_drawn_as_released(maps, steps)
    assert n_valid == first_y - 100


def test_a_perturbed_1p_frac_system_near_sigma_3n_is_cut_by_the_released_rule():
    from fracbuild import ifs, perturb

    rng = np.random.default_rng(0)
    maps, _ = ifs.sample_ifs(5.9, 2, rng)  # N = 2, sigma near 3N = 6: barely contractive
    steps = render.map_sequence(render.legacy_chaos_stream(5000), ifs.map_probabilities(maps))
    for _ in range(7):  # the seventh class of Delta = 0.4 diverges late
        epsilon = perturb.draw_epsilon(rng, "multiplicative", 0.4, (2, 6))
    raw_x, _, n_valid, _ = assert_cut_and_drawn_as_released(perturb.apply_epsilon(maps, epsilon, "multiplicative"),
                                                            steps, size=64, pad=3)
    assert n_valid == int(np.argmax(np.isnan(raw_x))) - 100 == 4005


def test_an_orbit_diverging_within_100_steps_draws_an_empty_image():
    # the released code fails on such an orbit (it deletes negative indices); an empty image instead
    maps = np.array([[1e100, 0, 0, 1e100, 1.0, 1.0]])
    xs, ys, n_valid, _ = kernels.chaos_game_tracked(maps, np.zeros(500, dtype=np.uint8))
    assert n_valid == 0 and xs.size == ys.size == 0
    assert not kernels.rasterize_bounded(xs, ys, 0, np.zeros(4), np.zeros(0, np.int16), False, 16, 2).any()


def test_released_cut_keeps_an_orbit_without_nan_as_it_is():
    xs = np.array([0.0, 1.0, np.inf, -np.inf])
    ys = np.array([0.0, 2.0, 3.0, 4.0])
    cut_x, cut_y = kernels.released_cut(xs, ys)
    assert np.array_equal(cut_x, xs) and np.array_equal(cut_y, ys)


def test_tracked_bounds_match_the_points():
    rng = np.random.default_rng(4)
    steps = render.map_sequence(rng.random(3000), np.full(3, 1 / 3))
    xs, ys, n_valid, bounds = kernels.chaos_game_tracked(SIERPINSKI, steps)
    assert n_valid == 3000
    assert bounds.tolist() == [xs.min(), xs.max(), ys.min(), ys.max()]
