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


def test_points_before_a_divergence_are_dropped():
    xs = np.arange(500, dtype=np.float64)
    ys = xs.copy()
    assert kernels.count_valid(xs, ys) == 500
    ys[300] = np.inf
    assert kernels.count_valid(xs, ys) == 200
    xs[50] = np.nan
    assert kernels.count_valid(xs, ys) == 0


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


def test_tracked_chaos_game_on_a_diverging_orbit():
    maps = np.array([[2.0, 0, 0, 2.0, 1.0, 1.0]])  # doubles every step: overflows after ~1024 steps
    steps = np.zeros(3000, dtype=np.uint8)
    xs, ys, n_valid, bounds = kernels.chaos_game_tracked(maps, steps)
    first_bad = int(np.argmax(~np.isfinite(xs)))
    assert 1000 < first_bad < 1100 and not np.isfinite(xs[first_bad:]).any()
    assert n_valid == first_bad - 100 == kernels.count_valid(xs, ys)
    assert bounds.tolist() == [xs[:n_valid].min(), xs[:n_valid].max(), ys[:n_valid].min(), ys[:n_valid].max()]
    image = kernels.rasterize_bounded(xs, ys, n_valid, bounds, np.zeros(0, np.int16), False, 32, 2)
    assert np.array_equal(image, kernels.rasterize(xs, ys, n_valid, np.zeros(0, np.int16), False, 32, 2))


def test_tracked_bounds_match_the_points():
    rng = np.random.default_rng(4)
    steps = render.map_sequence(rng.random(3000), np.full(3, 1 / 3))
    xs, ys, n_valid, bounds = kernels.chaos_game_tracked(SIERPINSKI, steps)
    assert n_valid == 3000
    assert bounds.tolist() == [xs.min(), xs.max(), ys.min(), ys.max()]
