"""staging.PinnedRing: the pinned buffers that a step's plan reaches the GPU
through. Runs on the CPU (unpinned buffers, fake events): the ring's
bookkeeping is the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fractrain.inputs.staging import PinnedRing


class FakeEvent:
    """Records what the ring asks of a CUDA event, in one shared log."""

    def __init__(self, log: list):
        self.log = log
        self.name = f"event{sum(1 for entry in log if entry[0] == 'record')}"

    def record(self, stream=None):
        self.log.append(("record", self.name, stream))

    def synchronize(self):
        self.log.append(("synchronize", self.name))


def ring(slots: int, log: list) -> PinnedRing:
    return PinnedRing(slots, pin=False, event_factory=lambda: FakeEvent(log))


def test_staged_arrays_keep_their_values_dtypes_and_shapes_in_one_buffer():
    staging = ring(2, [])
    arrays = [np.arange(7, dtype=np.int64), np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
              np.array([True, False, True]), np.zeros(0, dtype=np.int32), np.array(3.5, dtype=np.float64)]
    views = staging.stage(arrays)
    for array, view in zip(arrays, views):
        assert view.dtype == torch.from_numpy(array).dtype and tuple(view.shape) == array.shape
        assert np.array_equal(view.numpy(), array)
    base = staging._buffers[0]
    start, stop = base.data_ptr(), base.data_ptr() + base.numel()
    for view in views:
        if view.numel():
            assert start <= view.data_ptr() < stop and view.data_ptr() % 64 == 0
    arrays[0][0] = 99  # a copy, not a view of the caller's array
    assert views[0][0] == 0


def test_a_slot_is_rewritten_only_after_its_copies_were_marked_and_waited_for():
    log: list = []
    staging = ring(2, log)
    first = staging.stage([np.full(4, 1)])[0]
    staging.queued("side")
    second = staging.stage([np.full(4, 2)])[0]
    staging.queued("side")
    assert [e[0] for e in log] == ["record", "record"] and log[0] == ("record", "event0", "side")
    # The third plan reuses the first slot: it waits for the first mark, then overwrites.
    third = staging.stage([np.full(4, 3)])[0]
    assert log[-1] == ("synchronize", "event0")
    assert third.data_ptr() == first.data_ptr() and int(first[0]) == 3 and int(second[0]) == 2
    # Unmarked slot (the caller never queued copies from it): nothing to wait for.
    staging.stage([np.full(4, 4)])
    assert log[-1] == ("synchronize", "event1")
    staging.stage([np.full(4, 5)])  # slot 0 again: the third plan was not marked
    assert sum(1 for e in log if e[0] == "synchronize") == 2
    staging.queued()  # marks only the slot staged last, once
    staging.queued()
    assert sum(1 for e in log if e[0] == "record") == 3 and log[-1] == ("record", "event2", None)


def test_a_slot_grows_for_a_larger_plan():
    staging = ring(1, [])
    staging.stage([np.zeros(10, np.uint8)])
    small = staging._buffers[0].numel()
    big = np.arange(small * 3, dtype=np.int64)
    (view,) = staging.stage([big])
    assert staging._buffers[0].numel() >= big.nbytes and np.array_equal(view.numpy(), big)
    with pytest.raises(ValueError):
        PinnedRing(0, pin=False)


@pytest.mark.parametrize("planners", [0, 2])
def test_device_pipeline_through_a_ring_gives_the_same_batches(planners):
    """DevicePipeline with its plans staged through a (CPU, 2-slot) ring: the
    same batches as without, and every plan's slot is marked once queued."""
    from fractrain.inputs.device import DevicePipeline
    from fractrain.recipe import AugmentRecipe
    from fractrain.schedule import EpochSchedule

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(24, 40, 40), dtype=np.uint8)
    labels = np.arange(24) % 6

    def pipeline():
        return DevicePipeline(images, labels, EpochSchedule(24, 8, seed=0), AugmentRecipe(input_size=16), 6,
                              torch.device("cpu"), seed=2, plan_workers=planners)

    plain, staged = pipeline(), pipeline()
    assert plain._staging is None  # the CPU has nothing to pin
    log: list = []
    staged._staging = ring(2, log)
    for (x1, y1), (x2, y2) in zip(plain.batches(0, 5), staged.batches(0, 5)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert sum(1 for e in log if e[0] == "record") == 5
    assert sum(1 for e in log if e[0] == "synchronize") == 3  # plans 3 to 5 reused a slot
