"""render's and search's kind options come from the kinds' parameter
dataclasses: a new kind is one module, and the help states each kind's
default as the dataclasses declare it."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import click
import numpy as np
import pytest
from PIL import Image

from fracbuild import generators, kind_options
from fracbuild.cli import make_cli
from fracbuild.errors import run_cli
from fracbuild.generators.base import Generator, Sample, param
from fracbuild.shards import read_shard


@dataclass(frozen=True)
class ToyParams:
    toy_param: int = param(2, flag="--toy-param", help="Gray level of every image", unit="intensity")


class Toy(Generator):
    """The whole of a new kind: parameters, size, render."""

    kind = "toy"
    Params = ToyParams

    def num_samples(self) -> int:
        return 2

    def num_classes(self) -> int:
        return 2

    def image_size(self) -> int:
        return 8

    def render(self, index: int) -> Sample:
        return Sample(image=np.full((8, 8), self.params.toy_param, dtype=np.uint8), label=index)


def _run(argv: list[str]) -> int:
    return run_cli(make_cli(), argv, "fracbuild", interrupted="interrupted")


def test_a_registered_kind_gets_its_options_and_their_values(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(generators.KINDS, Toy.kind, Toy)
    assert _run(["render", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--toy-param INTEGER toy: Gray level of every image, intensity. [default: 2]" in text
    assert "|toy|" in text  # a --kind choice
    out = tmp_path / "toy"
    assert _run(["render", "--kind", "toy", "--toy-param", "3", "--out", str(out), "--workers", "1",
                 "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "toy" and manifest["params"] == {"toy_param": 3}
    (shard,) = manifest["shards"]
    pixels = [np.asarray(Image.open(io.BytesIO(sample.png))) for sample in read_shard(str(out / shard["file"]))]
    assert len(pixels) == 2 and all((image == 3).all() for image in pixels)


def test_an_option_the_kind_lacks_names_the_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(generators.KINDS, Toy.kind, Toy)
    assert _run(["render", "--kind", "toy", "--L", "4", "--out", str(tmp_path / "o")]) == 2
    assert "error: --L is not an option of --kind toy (it takes --toy-param)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_shared_flags_state_every_kinds_default_from_the_dataclasses(capsys):
    assert _run(["render", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "[default: 1p-frac, rcdb, visualatom, noise, real-image 512; fractaldb, ofdb 362]" in text
    assert "[default: 1p-frac 100000; fractaldb, ofdb 200000]" in text
    assert "[default: 1p-frac seeded; fractaldb, ofdb legacy]" in text
    assert "per kind" not in text
    assert _run(["search", "--help"]) == 0  # one kind: its own defaults only
    text = " ".join(capsys.readouterr().out.split())
    assert "Image side, pixels. [default: 512]" in text and "362" not in text


def test_one_flag_for_two_parameters_is_refused():
    @dataclass(frozen=True)
    class Clashing:
        colour: int = param(1, flag="--toy-param", help="Another name for the same flag")

    class Other(Toy):
        kind = "other"
        Params = Clashing

    with pytest.raises(TypeError, match="--toy-param sets colour here, toy_param elsewhere"):
        kind_options.kind_options([Toy, Other])(click.command()(lambda **_: None))

    @dataclass(frozen=True)
    class Fractional:
        toy_param: float = param(0.5, flag="--toy-param", help="The same flag, another type")

    Other.Params = Fractional
    with pytest.raises(TypeError, match="--toy-param takes float here, int elsewhere"):
        kind_options.kind_options([Toy, Other])
