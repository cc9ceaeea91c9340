"""The input factory decides the path and its defaults once, and records them."""

from __future__ import annotations

import pytest
import torch

from fractrain.config import RunConfig
from fractrain.errors import UserError
from fractrain.inputs import choose_input


def test_choose_input_decides_the_defaults_and_records_them():
    cpu = torch.device("cpu")
    choice = choose_input(RunConfig(), cpu, workers=3)
    assert (choice.path, choice.workers, choice.plan_workers) == ("cpu", 3, 2)
    assert (choice.fuse_augment, choice.gpu_augment_mode) == (False, "op-by-op")
    run = choice.recorded(RunConfig())
    assert (run.workers, run.fuse_augment, run.gpu_augment_mode) == (3, False, "op-by-op")
    asked = choose_input(RunConfig(input_path="gpu", fuse_augment=True, gpu_augment_mode="static"), cpu, workers=1)
    assert (asked.path, asked.plan_workers, asked.fuse_augment, asked.gpu_augment_mode) == ("gpu", 1, True, "static")


def test_choose_input_refuses_a_mode_the_device_cannot_run():
    with pytest.raises(UserError, match="'graph' needs a CUDA device"):
        choose_input(RunConfig(input_path="gpu", gpu_augment_mode="graph"), torch.device("cpu"), workers=0)
