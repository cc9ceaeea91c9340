"""The experiment's PNG figures, drawn with Pillow (no plotting library):
``line_plot``, one line per row against a shared x axis (pre-training loss
per step, probe top-1 per number of blocks), and ``top1_plot``, downstream
top-1 per row (the mean over seeds as a bar, each seed as a dot, their
range as a whisker, the paper's figure as a black diamond beside the bar)."""

from __future__ import annotations

import math
from typing import Sequence

from fracbuild.atomic import atomic_file

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
PAPER = (0, 0, 0)
SEED = (40, 40, 40)
GRID = (225, 225, 225)
SIZE = (640, 400)
# Pillow's built-in bitmap font is Latin-1 and about 6 px per character.
CHAR_WIDTH = 6
GREEK = {"Δ": "delta", "δ": "delta", "σ": "sigma", "Σ": "Sigma", "λ": "lambda", "α": "alpha"}


def colour(index: int) -> tuple[int, int, int]:
    """The colour of the ``index``-th row (rows keep their colour across plots)."""
    return PALETTE[index % len(PALETTE)]


def latin1(text: str) -> str:
    """``text`` as the built-in font can draw it: Greek letters spelt out,
    anything else outside Latin-1 as '?'."""
    for letter, name in GREEK.items():
        text = text.replace(letter, name)
    return text.encode("latin-1", errors="replace").decode("latin-1")


def _ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """About ``count`` round values spanning [low, high] (whole numbers only
    when ``integer``)."""
    span = high - low
    raw = span / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1, round(step))
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _save(image, out: str) -> None:
    """PNG written whole or not at all: a stopped run leaves no half-written plot."""
    with atomic_file(out) as handle:
        image.save(handle, format="PNG")


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def line_plot(series: dict[str, Sequence[tuple[float, float]]], out: str, *, title: str, x_label: str,
              size: tuple[int, int] = SIZE, colours: dict[str, tuple[int, int, int]] | None = None,
              markers: bool = False) -> bool:
    """One line per series (name -> [(x, y), ...]) on shared axes, the
    legend on the right; ``markers`` draws a dot at each point. Returns
    False (and writes nothing) when there is no point to draw."""
    from PIL import Image, ImageDraw

    points = [p for curve in series.values() for p in curve]
    if not points:
        return False
    width, height = size
    longest = max((len(latin1(name)) for name in series), default=0)
    left, right, top, bottom = 60, min(max(110, CHAR_WIDTH * longest + 24), width // 2), 24, 40
    x_low, x_high = min(x for x, _ in points), max(x for x, _ in points)
    y_low, y_high = min(y for _, y in points), max(y for _, y in points)
    if x_high <= x_low:
        x_low, x_high = x_low - 1, x_high + 1
    if y_high <= y_low:
        y_low, y_high = y_low - 1, y_high + 1
    margin = 0.05 * (y_high - y_low)
    y_low, y_high = y_low - margin, y_high + margin
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)

    def xy(x: float, y: float) -> tuple[float, float]:
        return (left + (width - right - left) * (x - x_low) / (x_high - x_low),
                height - bottom - (height - bottom - top) * (y - y_low) / (y_high - y_low))

    for tick in _ticks(y_low, y_high):
        _, y = xy(x_low, tick)
        draw.line([(left, y), (width - right, y)], fill=GRID)
        draw.text((4, y - 5), _label(tick), fill="black")
    for tick in _ticks(x_low, x_high, 6, integer=all(float(x).is_integer() for x, _ in points)):
        x, _ = xy(tick, y_low)
        draw.line([(x, height - bottom), (x, height - bottom + 4)], fill="black")
        draw.text((x - CHAR_WIDTH * len(_label(tick)) / 2, height - bottom + 6), _label(tick), fill="black")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for index, (name, curve) in enumerate(series.items()):
        fill = (colours or {}).get(name, colour(index))
        path = [xy(x, y) for x, y in sorted(curve)]
        if len(path) > 1:
            draw.line(path, fill=fill, width=2)
        if markers or len(path) == 1:
            for x, y in path:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=fill)
        draw.text((width - right + 8, top + 16 * index), latin1(name), fill=fill)
    draw.text((left, 6), latin1(title), fill="black")
    draw.text(((left + width - right) / 2 - CHAR_WIDTH * len(x_label) / 2, height - 16), latin1(x_label), fill="black")
    _save(image, out)
    return True


def _wrap(text: str, chars: int) -> list[str]:
    lines: list[str] = []
    for word in latin1(text).split():
        if lines and len(lines[-1]) + 1 + len(word) <= chars:
            lines[-1] += " " + word
        else:
            lines.append(word[:chars])
    return lines[:3]


def top1_plot(rows: Sequence[tuple[str, Sequence[float], float | None]], out: str, *, title: str,
              size: tuple[int, int] | None = None) -> bool:
    """Top-1 (%) per row: rows as (name, the seeds' values, the paper's
    figure or None). The bar is the mean over seeds, the dots the seeds, the
    whisker their range; a black diamond marks the paper's figure. The y
    axis is 0..100. Returns False when no row has a value or a paper figure."""
    from PIL import Image, ImageDraw

    if not any(values or paper is not None for _, values, paper in rows):
        return False
    width, height = size or (max(SIZE[0], 90 + 100 * len(rows)), SIZE[1])
    left, right, top, bottom = 50, 20, 40, 56
    slot = (width - left - right) / len(rows)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    def y_of(value: float) -> float:
        return height - bottom - (height - bottom - top) * min(max(value, 0.0), 100.0) / 100.0

    for tick in range(0, 101, 20):
        y = y_of(tick)
        draw.line([(left, y), (width - right, y)], fill=GRID)
        draw.text((left - 8 - CHAR_WIDTH * len(str(tick)), y - 5), str(tick), fill="black")
    bar = min(slot * 0.35, 40)
    for index, (name, values, paper) in enumerate(rows):
        centre = left + slot * (index + 0.5)
        bar_left = centre - bar - 2 if paper is not None else centre - bar / 2
        bar_centre = bar_left + bar / 2
        if values:
            mean = sum(values) / len(values)
            draw.rectangle([bar_left, y_of(mean), bar_left + bar, y_of(0)], fill=colour(index))
            if len(values) > 1:
                draw.line([(bar_centre, y_of(min(values))), (bar_centre, y_of(max(values)))], fill=SEED, width=1)
            for value in values:
                y = y_of(value)
                draw.ellipse([bar_centre - 2, y - 2, bar_centre + 2, y + 2], fill=SEED)
        if paper is not None:
            x, y = centre + 8, y_of(paper)
            draw.polygon([(x, y - 6), (x + 6, y), (x, y + 6), (x - 6, y)], fill=PAPER)
        for line, text in enumerate(_wrap(name, max(int(slot / CHAR_WIDTH) - 1, 4))):
            draw.text((centre - CHAR_WIDTH * len(text) / 2, height - bottom + 6 + 12 * line), text, fill="black")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")  # over the bars' feet
    draw.text((left, 6), latin1(title), fill="black")
    draw.text((left, 20), "bar: mean over seeds, dots: seeds, diamond: the paper", fill=SEED)
    _save(image, out)
    return True
