"""The static layout of the GPU augmentation (fractrain.gpu_augment.static):
the same batches as the op-by-op layout, in shapes fixed for a run."""


import numpy as np
import pytest
import torch

from fractrain.gpu_augment import GpuAugment, affine, fusion, mix_batch
from fractrain.gpu_augment import static as static_layout
from fractrain.gpu_augment.draws import hashed_normal
from fractrain.gpu_augment.plans import AugmentPlan, StaticPlan
from fractrain.gpu_augment.rand_augment import parse_rand_augment
from fractrain.recipe import AugmentRecipe


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dots(n: int, size: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """uint8 (n, channels, size, size): sparse bright dots on black, like the data."""
    rng = np.random.default_rng(seed)
    bright = rng.random((n, channels, size, size)) < 0.1
    return torch.from_numpy((bright * rng.integers(100, 256, bright.shape)).astype(np.uint8))


RECIPES = {
    "default": AugmentRecipe(input_size=32),
    "rgb fill, random interpolation": AugmentRecipe(input_size=32, interpolation="random",
                                                    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    "colour jitter, no RandAugment": AugmentRecipe(input_size=32, auto_augment=None, color_jitter=0.4),
    "no erasing, no mixing": AugmentRecipe(input_size=32, reprob=0.0, mixup_alpha=0.0, cutmix_alpha=0.0),
    "no crop, 3 erasing boxes": AugmentRecipe(input_size=32, crop=False, recount=3),
}


@pytest.mark.parametrize("name", list(RECIPES))
def test_static_layout_gives_the_op_by_op_batches(name):
    """Bit for bit on the CPU: the transposed crops, the identities standing
    in for the ops a sample did not draw, the spare geometric slots, the
    masks of erasing and CutMix."""
    recipe = RECIPES[name]
    channels = 3 if name.startswith("rgb") else 1
    images, targets = dots(48, 64, channels), torch.arange(48) % 10
    by_op, static = GpuAugment(recipe, 10, "cpu"), GpuAugment(recipe, 10, "cpu", static=True)
    transposed = statistics_ops = 0
    for seed in range(5):
        plan = static.plan(tuple(images.shape), gen(seed))
        assert isinstance(plan, StaticPlan)
        transposed += int(plan.tensors["crop.transpose"].sum())
        if "layer0.stats.kind" in plan.tensors:
            statistics_ops += int((plan.tensors["layer0.stats.kind"] > 0).sum())
        x1, y1 = by_op(images, targets, gen(seed))
        x2, y2 = static.apply(images, targets, plan)
        assert torch.equal(x1, x2) and torch.equal(y1, y2), seed
    if recipe.crop:
        assert transposed > 0  # the vertical-first crops were exercised (Pillow 13's order)
    if recipe.auto_augment:  # the statistics ops' slots too, with samples outside them
        assert statistics_ops > 0 and static_layout.stats_slots(48, static.rand_augment) < 48


@pytest.mark.parametrize("name", ["default", "rgb fill, random interpolation"])
def test_taps_resize_gives_the_same_batches_in_both_layouts_fused_or_not(name):
    """resize_precision="taps": the static layout gives the op-by-op batches
    bit for bit, and its compiled passes the eager ones (to float rounding)."""
    recipe = RECIPES[name]
    channels = 3 if name.startswith("rgb") else 1
    images, targets = dots(32, 64, channels, seed=4), torch.arange(32) % 10
    by_op = GpuAugment(recipe, 10, "cpu", resize_precision="taps")
    static = GpuAugment(recipe, 10, "cpu", resize_precision="taps", static=True)
    # Compiling every fused function costs ~20 s on a CPU: one recipe is enough.
    fused = GpuAugment(recipe, 10, "cpu", resize_precision="taps", fuse=True) if name == "default" else None
    for seed in range(3):
        x1, y1 = by_op(images, targets, gen(seed))
        x2, y2 = static(images, targets, gen(seed))
        assert torch.equal(x1, x2) and torch.equal(y1, y2), seed
        if fused is not None:
            x3, y3 = fused(images, targets, gen(seed))
            assert (x1 - x3).abs().max() < 1e-5 and torch.allclose(y1, y3)
    if fused is not None:
        assert not [fn for fn in fusion._FAILED if fn.__module__.startswith("fractrain")]  # none fell back
        assert any(fn.__name__ == "_taps_pass" for fn in fusion._COMPILED)


@pytest.mark.parametrize("static", [False, True])
def test_grayscale_gives_the_batches_of_its_rgb_copy(static):
    """Grayscale input (expanded to RGB after the crop, for a third of the
    crop's work) gives the batches of the same images given as three equal
    channels, in either layout, with RandAugment's per-channel fill."""
    recipe = RECIPES["rgb fill, random interpolation"]
    aug = GpuAugment(recipe, 10, "cpu", static=static)
    assert aug._channels_after_expand(1) == 3  # the fill differs by channel
    grey, targets = dots(16, 48, seed=5), torch.arange(16) % 10
    for step in range(3):
        plan = aug.plan((16, 1, 48, 48), gen(step))
        x1, y1 = aug.apply(grey, targets, plan)
        x3, y3 = aug.apply(grey.expand(-1, 3, -1, -1).contiguous(), targets, plan)
        assert x1.shape == (16, 3, 32, 32) and torch.equal(x1, x3) and torch.equal(y1, y3)
    assert not torch.equal(x1[:, 0], x1[:, 2])  # the channels do differ (fill, normalisation)


def test_static_plans_have_one_layout_per_run():
    aug = GpuAugment(RECIPES["rgb fill, random interpolation"], 10, "cpu", static=True)
    plans = [aug.plan((64, 3, 48, 48), gen(seed)) for seed in range(4)]
    assert len({p.key for p in plans}) == 1 and len({p.buffer.numel() for p in plans}) == 1
    assert plans[0].tensors["layer0.affine.index"].shape == (static_layout.affine_slots(64, aug.rand_augment),)
    assert plans[0].tensors["layer1.stats.index"].shape == (static_layout.stats_slots(64, aug.rand_augment),)
    # The statistics ops' slots: those that drew one (kind > 0) first, then spare ones (kind 0), all distinct.
    for plan in plans:
        index, kind = plan.tensors["layer0.stats.index"], plan.tensors["layer0.stats.kind"]
        drawn = int((kind > 0).sum())
        assert (kind[:drawn] > 0).all() and (kind[drawn:] == 0).all() and len(set(index.tolist())) == len(index)
    # A few numbers per sample (the tables are built on the device): a plan of 256 is small.
    assert aug.plan((256, 3, 48, 48), gen(0)).buffer.numel() < 64_000  # op by op: ~550 kB


def test_value_tables_built_on_the_device_are_the_host_tables():
    from fractrain.gpu_augment.rand_augment import RAND_INCREASING_TRANSFORMS, RAND_TRANSFORMS, level_to_arg, value_table

    names = [n for n in set(RAND_TRANSFORMS + RAND_INCREASING_TRANSFORMS)
             if n.startswith(static_layout.VALUE_OPS)]
    assert len(names) == 8  # Invert, Posterize, Solarize, SolarizeAdd, Brightness (+ 3 Increasing)
    magnitude = torch.linspace(0, 10, 21)
    sign = torch.where(torch.arange(21) % 2 == 0, 1.0, -1.0)
    for name in names:
        arg = level_to_arg(name, magnitude, sign)
        op = torch.full((21,), static_layout._value_op(name) + 1)
        assert torch.equal(static_layout._value_tables(op, arg), value_table(name, arg)), name
    identity = static_layout._value_tables(torch.zeros(3, dtype=torch.int64), torch.rand(3))
    assert torch.equal(identity, torch.arange(256.0).expand(3, 1, 256))


def test_batches_the_static_layout_cannot_hold_are_laid_out_op_by_op(monkeypatch):
    recipe = RECIPES["default"]
    images, targets = dots(16, 40), torch.arange(16) % 10
    static = GpuAugment(recipe, 10, "cpu", static=True)
    # Non-square images: the transposed crop needs square ones.
    assert isinstance(static.plan((16, 1, 40, 48), gen(0)), AugmentPlan)
    # More geometric ops, or statistics ops, than slots (none here).
    for slots in ("affine_slots", "stats_slots"):
        with monkeypatch.context() as patch:
            patch.setattr(static_layout, slots, lambda batch, cfg: 0)
            plan = static.plan(tuple(images.shape), gen(1))
            assert isinstance(plan, AugmentPlan), slots
            x1, y1 = GpuAugment(recipe, 10, "cpu")(images, targets, gen(1))
            x2, y2 = static.apply(images, targets, plan)
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert isinstance(static.plan(tuple(images.shape), gen(1)), StaticPlan)


def test_affine_slots_hold_the_geometric_ops_but_for_one_batch_in_a_billion():
    from scipy.stats import binom

    cfg = parse_rand_augment("rand-m9-mstd0.5-inc1")
    p = cfg.prob * 5 / 15  # five geometric ops of fifteen, applied with P = 0.5
    for batch in (8, 64, 256, 1024):
        slots = static_layout.affine_slots(batch, cfg)
        assert slots % 8 == 0 or slots == batch
        assert binom.sf(slots, batch, p) < 1e-9
        assert slots < batch or batch <= 64  # a real saving at the batch sizes that matter
    assert static_layout.affine_slots(256, cfg) == 88
    q = cfg.prob * 3 / 15  # AutoContrast, Equalize, Contrast
    for batch in (8, 64, 256, 1024):
        slots = static_layout.stats_slots(batch, cfg)
        assert binom.sf(slots, batch, q) < 1e-9 and (slots < batch or batch <= 16)
    assert static_layout.stats_slots(256, cfg) == 64  # of 256: a quarter of the histograms


@pytest.mark.parametrize("cubic", [True, False])
def test_the_identity_matrix_resamples_each_pixel_to_itself(cubic):
    """What the spare geometric slots rely on."""
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, 17, 23))).float()
    identity = torch.eye(2, 3, dtype=torch.float64).repeat(4, 1, 1)
    assert torch.equal(affine(x, identity, (1.0, 2.0, 3.0), cubic), x)


def test_blend_with_reverse_is_mixup_cutmix_and_neither():
    x = torch.randn(6, 3, 10, 12)
    empty = torch.zeros(4, dtype=torch.int64)
    one = torch.tensor(1.0)
    lam = torch.tensor(0.3)
    assert torch.equal(static_layout.blend_with_reverse(x, lam, empty), mix_batch(x, "mixup", lam, (0, 0, 0, 0)))
    box = (2, 7, 3, 11)
    assert torch.equal(static_layout.blend_with_reverse(x, one, torch.tensor(box)), mix_batch(x, "cutmix", 0.5, box))
    assert torch.equal(static_layout.blend_with_reverse(x, one, empty), x)


def test_hashed_normal_is_standard_normal_and_a_function_of_seed_and_position():
    from scipy.stats import kstest

    seed = torch.tensor(2**40 + 12345)
    z = hashed_normal(seed, (8, 3, 64, 64), "cpu")
    assert z.dtype == torch.float32 and kstest(z.flatten().numpy(), "norm").statistic < 0.01
    assert torch.equal(z, hashed_normal(seed, (8, 3, 64, 64), "cpu"))
    assert torch.equal(z.flatten()[:1000], hashed_normal(seed, (1000,), "cpu"))  # position alone
    other = hashed_normal(seed + 1, (8, 3, 64, 64), "cpu")
    assert abs(float(torch.corrcoef(torch.stack([z.flatten(), other.flatten()]))[0, 1])) < 0.01
    high = hashed_normal(seed + 2**32, (8, 3, 64, 64), "cpu")  # the seed's high half counts too
    assert not torch.equal(z, high)
    # Neighbours are independent (a weak hash shows up as correlated neighbours).
    flat = z.flatten()
    assert abs(float(torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1])) < 0.01


def test_fused_static_layout_compiles_once_and_gives_the_eager_batches():
    """fuse=True compiles the whole static device half as one graph (fixed
    shapes): the eager batches, for several batches without a recompile."""
    recipe = RECIPES["rgb fill, random interpolation"]
    images, targets = dots(32, 48, 3, seed=2), torch.arange(32) % 10
    eager, fused = GpuAugment(recipe, 10, "cpu", static=True), GpuAugment(recipe, 10, "cpu", static=True, fuse=True)
    torch._dynamo.utils.counters.clear()
    for seed in range(3):
        x1, y1 = eager(images, targets, gen(seed))
        x2, y2 = fused(images, targets, gen(seed))
        # The compiled normalisation rounds differently (an ulp of a few % of the values, seen
        # here); one grey level apart would be 1 / 255 / 0.229 = 0.017.
        assert (x1 - x2).abs().max() < 1e-5
        assert torch.allclose(y1, y2)
    assert not [fn for fn in fusion._FAILED if fn.__module__.startswith("fractrain")]  # none fell back
    assert any(fn.__name__ == "augment" and fn.__module__.endswith("static") for fn in fusion._COMPILED)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # one graph, compiled once


# --------------------------------------------------------------------------
# CUDA graphs (graphs.py) and the pipeline's modes


def rerun_capture(fn):
    """A stand-in for CUDA graph capture on the CPU: replay() reruns fn and
    writes its result into the first run's tensors, as a graph writes its
    fixed outputs."""
    outputs = fn()

    def replay():
        for out, new in zip(outputs, fn()):
            out.copy_(new)

    return replay, outputs


def test_graphed_augment_slots_take_turns_and_give_the_uncaptured_batches():
    from fractrain.gpu_augment.graphs import GraphedAugment

    recipe = RECIPES["default"]
    cache, labels = dots(40, 48)[:, 0], torch.arange(40) % 10
    aug = GpuAugment(recipe, 10, "cpu", static=True)
    graphed = GraphedAugment(aug, cache, labels, capture=rerun_capture)
    outputs = []
    for step in range(4):
        indices = torch.randperm(40, generator=gen(100 + step))[:16]
        plan = aug.plan((16, 1, 48, 48), gen(step))
        x, y = graphed(indices, plan)
        expected = aug.apply(cache.index_select(0, indices), labels.index_select(0, indices), plan)
        assert torch.equal(x, expected[0]) and torch.equal(y, expected[1]), step
        if outputs:  # the batch before is intact: the step reading it may still run
            assert torch.equal(outputs[-1][0], outputs[-1][1])
        outputs.append((x, x.clone()))
    # Two slots: batch k + 2 is written where batch k was; batch k + 1 is not.
    assert outputs[0][0].data_ptr() == outputs[2][0].data_ptr() != outputs[1][0].data_ptr()
    # Another layout (batch size) is not captured: the caller runs it as usual.
    assert graphed(torch.arange(8), aug.plan((8, 1, 48, 48), gen(9))) is None


def test_graphed_augment_slots_do_not_share_a_memory_pool(monkeypatch):
    """Each slot's CUDA graph is captured into its own memory pool: in a
    shared pool, one capture's outputs may take memory another capture's
    graph uses for its intermediates, so replaying slot 0 would overwrite
    slot 1's batch while the training step still reads it. torch.cuda's
    graph API is faked (recording each capture's pool), so this runs on the CPU."""
    import contextlib

    from fractrain.gpu_augment import graphs

    pools = []

    class FakeGraph:
        def replay(self):
            pass

    @contextlib.contextmanager
    def fake_graph(graph, pool=None, capture_error_mode="global"):
        pools.append(pool)
        yield

    class FakeStream:
        def wait_stream(self, other):
            pass

    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", fake_graph)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: object())  # what sharing would pass

    aug = GpuAugment(RECIPES["default"], 10, "cpu", static=True)
    graphed = graphs.GraphedAugment(aug, dots(8, 32)[:, 0], torch.arange(8) % 10)
    assert graphed(torch.arange(4), aug.plan((4, 1, 32, 32), gen(0))) is not None and not graphed.failed
    assert len(pools) == 2 and pools == [None, None]  # one private pool per slot


def test_graphed_augment_checks_its_first_batches_and_steps_aside_when_wrong():
    """The first batches are checked against the uncaptured batch and for
    the batch before being intact: a capture that gets either wrong (here
    faked: a replay that is off, a replay that writes over the other slot's
    batch, as slots sharing a memory pool could) is warned about and not used."""
    from fractrain.gpu_augment.graphs import GraphedAugment

    made = []

    def off_by_half(fn):
        replay, outputs = rerun_capture(fn)
        return (lambda: (replay(), outputs[0].add_(0.5))), outputs

    def overwrites_the_other_slot(fn):
        replay, outputs = rerun_capture(fn)
        made.append(outputs)

        def scribble():
            replay()
            for other in made:
                if other is not outputs:
                    other[0].add_(1.0)

        return scribble, outputs

    aug = GpuAugment(RECIPES["default"], 10, "cpu", static=True)
    cache, labels = dots(16, 32)[:, 0], torch.arange(16) % 10
    for capture, message, good_calls in ((off_by_half, "differs from the uncaptured one", 0),
                                         (overwrites_the_other_slot, "changed while the next one was made", 1)):
        graphed = GraphedAugment(aug, cache, labels, capture=capture)
        for step in range(good_calls):
            assert graphed(torch.arange(step, step + 8), aug.plan((8, 1, 32, 32), gen(step))) is not None
        with pytest.warns(RuntimeWarning, match=message):
            assert graphed(torch.arange(8), aug.plan((8, 1, 32, 32), gen(7))) is None
        assert graphed.failed and graphed(torch.arange(8), aug.plan((8, 1, 32, 32), gen(8))) is None
    # Past the checked batches, no more checks (nor syncs): a later fault goes unseen by design.
    graphed = GraphedAugment(aug, cache, labels, capture=rerun_capture, verify=2)
    for step in range(4):
        assert graphed(torch.arange(8), aug.plan((8, 1, 32, 32), gen(step))) is not None
    assert graphed._to_verify == 0 and graphed._kept is None


def test_graphed_augment_that_cannot_capture_warns_once_and_steps_aside():
    from fractrain.gpu_augment.graphs import GraphedAugment

    def broken(fn):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    aug = GpuAugment(RECIPES["default"], 10, "cpu", static=True)
    graphed = GraphedAugment(aug, dots(8, 32)[:, 0], torch.arange(8), capture=broken)
    plan = aug.plan((4, 1, 32, 32), gen(0))
    message = r"CUDA graphs failed \(RuntimeError: operation not permitted when stream is capturing\); it runs"
    with pytest.warns(RuntimeWarning, match=message):
        assert graphed(torch.arange(4), plan) is None
    assert graphed(torch.arange(4), plan) is None  # no second try, no second warning


def test_pipeline_modes_give_the_same_batches_and_graph_needs_cuda():
    from fractrain.errors import UserError
    from fractrain.inputs.defaults import augment_mode_default
    from fractrain.inputs.device import DevicePipeline
    from fractrain.schedule import EpochSchedule

    images, labels = dots(40, 48)[:, 0].numpy(), np.arange(40) % 10
    recipe = RECIPES["rgb fill, random interpolation"]
    runs = {}
    for mode in ("op-by-op", "static"):
        pipe = DevicePipeline(images, labels, EpochSchedule(40, 16, seed=0), recipe, 10, torch.device("cpu"),
                              seed=0, augment_mode=mode)
        runs[mode] = list(pipe.batches(0, 4))
    for (x1, y1), (x2, y2) in zip(runs["op-by-op"], runs["static"]):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    with pytest.raises(UserError, match="needs a CUDA device"):
        DevicePipeline(images, labels, EpochSchedule(40, 16, seed=0), recipe, 10, torch.device("cpu"), seed=0,
                       augment_mode="graph")
    assert augment_mode_default(None, torch.device("cpu")) == "op-by-op"
    assert augment_mode_default(None, torch.device("cuda")) == "graph"
    assert augment_mode_default("static", torch.device("cpu")) == "static"
    with pytest.raises(UserError, match="one of op-by-op, static, graph"):
        augment_mode_default("fast", torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_mode_gives_the_op_by_op_batches():
    """On the GPU: the captured graphs (with and without the side stream,
    slots reused) give the batches of the op-by-op layout, up to float
    rounding ties of the fused kernels."""
    from fractrain.inputs.device import DevicePipeline
    from fractrain.schedule import EpochSchedule

    images, labels = dots(64, 64)[:, 0].numpy(), np.arange(64) % 10
    recipe = RECIPES["default"]
    runs = {}
    # Static (uncaptured) and op-by-op eager too: where a difference comes from.
    for mode, overlap, fuse in (("op-by-op", False, True), ("op-by-op", False, False), ("static", False, True),
                                ("static", False, False), ("graph", True, True), ("graph", False, True),
                                ("graph", True, False)):
        pipe = DevicePipeline(images, labels, EpochSchedule(64, 32, seed=0), recipe, 10, torch.device("cuda"),
                              seed=0, overlap=overlap, augment_mode=mode, augment_options={"fuse": fuse})
        runs[mode, overlap, fuse] = [(x.clone(), y.clone()) for x, y in pipe.batches(0, 6)]
        if mode == "graph":
            assert pipe.graphed is not None and pipe.graphed.slots and not pipe.graphed.failed
    # Each against the op-by-op batches of the same kernels (fused or eager):
    # fused and eager kernels may round a statistic differently (e.g. a
    # Contrast mean on a tie moves a sample by up to 0.8 grey levels).
    found = []
    for key, other in runs.items():
        for step, ((x1, y1), (x2, y2)) in enumerate(zip(runs["op-by-op", False, key[2]], other)):
            diff = (x1 - x2).abs() * 127.5  # grey levels
            off = (diff > 0.01).float().mean().item()
            found.append((key, step, off, diff.max().item(), (y1 - y2).abs().max().item()))
    print("\n".join(f"{key} batch {step}: {off:.4%} of values off, max {top:.3f} grey levels, targets {dy:.2e}"
                    for key, step, off, top, dy in found))
    assert all(off < 1e-3 and top < 3 and dy < 1e-5 for key, step, off, top, dy in found), found
    # The contract: a batch stays intact until its slot's next turn (two
    # batches later), e.g. while the next batch is made beside its step.
    pipe = DevicePipeline(images, labels, EpochSchedule(64, 32, seed=0), recipe, 10, torch.device("cuda"),
                          seed=0, overlap=False, augment_mode="graph", augment_options={"fuse": False})
    kept = []
    for step, (x, y) in enumerate(pipe.batches(0, 6)):
        if kept:
            torch.cuda.synchronize()
            assert torch.equal(kept[-1][0], kept[-1][1]), f"batch {step - 1} changed when batch {step} was made"
        kept.append((x, x.clone()))


def test_the_static_device_half_reads_nothing_from_the_host():
    """What CUDA graph capture needs: no operation of the device half takes a
    host tensor (on a GPU, a host-to-device copy, which a graph cannot
    capture). Run on the meta device, where any host tensor stands out."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class HostReads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.found = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            tensors = [a for a in tree_flatten((args, kwargs or {}))[0] if isinstance(a, torch.Tensor)]
            if any(t.device.type == "cpu" for t in tensors):
                self.found.append(str(func))
            return func(*args, **(kwargs or {}))

    for name in ("default", "rgb fill, random interpolation", "colour jitter, no RandAugment"):
        aug = GpuAugment(RECIPES[name], 10, "meta", static=True)
        plan = aug.plan((16, 1, 48, 48), gen(0))
        tensors = {key: value.to("meta") for key, value in plan.tensors.items()}
        images = torch.empty((16, 1, 48, 48), dtype=torch.uint8, device="meta")
        targets = torch.empty(16, dtype=torch.int64, device="meta")
        mean, std = torch.empty(3, device="meta"), torch.empty(3, device="meta")
        reads = HostReads()
        with reads:
            x, y = static_layout.augment(aug.static_config, images, targets, tensors, mean, std)
        assert x.shape == (16, 3, 32, 32) and y.shape == (16, 10)
        assert reads.found == [], (name, reads.found[:5])
