"""The experiment's Pillow plots: a PNG of the asked size, not blank, and
drawn where the data put it (a line higher for larger values)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from fractrain import plots


def pixels_of(path, colour) -> np.ndarray:
    """(row, column) of every pixel of exactly ``colour``: int64 (N, 2)."""
    image = np.asarray(Image.open(path).convert("RGB"))
    return np.argwhere((image == np.array(colour, np.uint8)).all(axis=2))


def test_line_plot_is_a_png_of_the_size_with_one_colour_per_series(tmp_path):
    out = tmp_path / "lines.png"
    assert plots.line_plot({"Δ 0.1": [(0, 5.0), (10, 4.0), (20, 3.0)], "σ 4": [(0, 5.0), (20, 4.5)]}, str(out),
                           title="loss", x_label="step", size=(500, 300))
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (500, 300)
    assert len(pixels_of(out, plots.colour(0))) > 100 and len(pixels_of(out, plots.colour(1))) > 100
    assert not plots.line_plot({"a": []}, str(tmp_path / "none.png"), title="t", x_label="x")
    assert not (tmp_path / "none.png").exists()


def test_a_line_is_drawn_where_its_values_are(tmp_path):
    """Series a above b, then b above a: the lines' pixels swap height."""
    high, low = [(1, 80.0), (2, 82.0), (3, 85.0)], [(1, 20.0), (2, 25.0), (3, 21.0)]
    heights = []
    for name, data in (("first", {"a": high, "b": low}), ("second", {"a": low, "b": high})):
        out = tmp_path / f"{name}.png"
        plots.line_plot(data, str(out), title="probe", x_label="K", markers=True)
        heights.append([pixels_of(out, plots.colour(i))[:, 0].mean() for i in (0, 1)])
    (a1, b1), (a2, b2) = heights
    assert a1 < b1 and a2 > b2  # image rows grow downwards
    assert abs(a1 - b2) < 5 and abs(b1 - a2) < 5  # same data, same place, whatever the colour


def test_line_plot_colours_follow_the_names_given(tmp_path):
    out = tmp_path / "c.png"
    plots.line_plot({"x": [(0, 1.0), (1, 2.0)]}, str(out), title="t", x_label="s", colours={"x": plots.colour(3)})
    assert len(pixels_of(out, plots.colour(3))) > 100 and len(pixels_of(out, plots.colour(0))) == 0


def test_latin1_spells_out_greek_for_the_bitmap_font():
    assert plots.latin1("Δ 0.1, σ 3.5 → L") == "delta 0.1, sigma 3.5 ? L"
