"""IFS sampling: the sigma-factor constraints, probabilities, perturbations."""

from __future__ import annotations

import numpy as np
import pytest

from fracbuild import ifs, perturb, seeds


@pytest.mark.parametrize("n_maps,sigma", [(1, 1.5), (2, 3.5), (2, 5.0), (3, 4.0), (4, 9.0), (2, 0.3)])
def test_singular_values_meet_the_sigma_factor(n_maps, sigma):
    rng = np.random.default_rng(n_maps * 100 + int(sigma * 10))
    for _ in range(300):
        values = ifs.sample_singular_values(sigma, n_maps, rng)
        assert values.shape == (n_maps, 2)
        s1, s2 = values[:, 0], values[:, 1]
        assert np.all(s1 <= 1 + 1e-12) and np.all(s2 >= -1e-12) and np.all(s1 >= s2 - 1e-12)
        assert np.isclose((s1 + 2 * s2).sum(), sigma)


@pytest.mark.parametrize("n_maps,sigma", [(2, 3.5), (3, 6.0), (2, 5.5)])
def test_sampled_systems_have_the_drawn_sigma(n_maps, sigma):
    rng = np.random.default_rng(7)
    for _ in range(100):
        maps, drawn = ifs.sample_ifs(sigma, n_maps, rng)
        assert maps.shape == (n_maps, 6) and maps.dtype == np.float64
        assert sigma - 0.1 <= drawn <= sigma + 0.1
        # the SVD of the built linear parts gives back the drawn singular values
        assert ifs.sigma_factor(maps) == pytest.approx(drawn, abs=1e-9)
        assert np.all(np.abs(maps[:, 4:]) <= 1.0)


def test_sigma_draw_uses_the_whole_jitter_window():
    rng = np.random.default_rng(3)
    drawn = np.array([ifs.sample_ifs(3.5, 2, rng)[1] for _ in range(400)])
    assert drawn.min() < 3.42 and drawn.max() > 3.58


def test_probabilities_follow_determinants():
    maps = np.array([[0.5, 0, 0, 0.5, 0, 0], [0.2, 0.1, -0.1, 0.3, 1, 1]])
    p = ifs.map_probabilities(maps)
    dets = np.array([0.25, abs(0.2 * 0.3 + 0.1 * 0.1)])
    assert np.allclose(p, dets / dets.sum()) and np.isclose(p.sum(), 1)


def test_singular_systems_get_uniform_probabilities():
    assert np.allclose(ifs.map_probabilities(np.zeros((3, 6))), 1 / 3)


def test_multiplicative_epsilon_range():
    eps = perturb.draw_epsilon(np.random.default_rng(0), "multiplicative", 0.1, (2000, 6))
    assert eps.min() >= 0.9 and eps.max() <= 1.1
    assert eps.min() < 0.901 and eps.max() > 1.099  # the whole range is used
    maps = np.ones((2, 6)) * 2
    assert np.allclose(perturb.apply_epsilon(maps, eps[:2], "multiplicative"), 2 * eps[:2])


def test_additive_epsilon_range():
    eps = perturb.draw_epsilon(np.random.default_rng(0), "additive", 0.1, (2000, 6))
    assert eps.min() >= -0.05 and eps.max() <= 0.05
    assert eps.min() < -0.049 and eps.max() > 0.049
    maps = np.ones((2, 6))
    assert np.allclose(perturb.apply_epsilon(maps, eps[:2], "additive"), 1 + eps[:2])


def test_seed_streams_are_independent_and_reproducible():
    a = seeds.rng(5, seeds.SAMPLE, 3).random(4)
    assert np.array_equal(a, seeds.rng(5, seeds.SAMPLE, 3).random(4))
    assert not np.array_equal(a, seeds.rng(5, seeds.SAMPLE, 4).random(4))
    assert not np.array_equal(a, seeds.rng(6, seeds.SAMPLE, 3).random(4))
