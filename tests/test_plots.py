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


def test_top1_bars_grow_with_the_mean_and_the_width_with_the_rows(tmp_path):
    out = tmp_path / "top1.png"
    assert plots.top1_plot([("Δ 0.1", [80.0, 82.0], None), ("scratch", [20.0, 22.0], None)], str(out), title="t")
    assert Image.open(out).size == (640, 400)
    tall, short = len(pixels_of(out, plots.colour(0))), len(pixels_of(out, plots.colour(1)))
    assert 3.0 < tall / short < 4.7  # bar areas in the ratio of the means, 81 / 21
    assert len(pixels_of(out, plots.SEED)) > 10  # the seeds' dots
    many = [(f"row {i}", [float(i)], None) for i in range(10)]
    plots.top1_plot(many, str(tmp_path / "many.png"), title="t")
    assert Image.open(tmp_path / "many.png").size == (90 + 100 * 10, 400)
    assert not plots.top1_plot([("a", [], None)], str(tmp_path / "none.png"), title="t")


def test_top1_marks_the_papers_figure_at_its_height(tmp_path):
    rows = [("Δ 0.1", [30.0], None), ("scratch", [10.0], None)]
    without, with_paper = tmp_path / "without.png", tmp_path / "with.png"
    plots.top1_plot(rows, str(without), title="t")
    plots.top1_plot([rows[0], ("scratch", [10.0], 75.0)], str(with_paper), title="t")
    black = [(np.asarray(Image.open(p).convert("RGB")) == 0).all(axis=2) for p in (without, with_paper)]
    diamond = np.argwhere(black[1] & ~black[0])
    assert len(diamond) > 20
    height, bottom, top = 400, 56, 40
    assert abs(diamond[:, 0].mean() - (height - bottom - (height - bottom - top) * 0.75)) < 3
    assert diamond[:, 1].min() > 640 / 2  # beside the second row's bar, not the first's
