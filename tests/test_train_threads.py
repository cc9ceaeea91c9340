"""CPU thread counts: torch's intra-op threads and the loader workers are
chosen from the cores this process may use, and the choice is logged."""

from __future__ import annotations

import pytest

from fractrain import threads


@pytest.fixture
def no_omp(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.mark.parametrize("cores, ranks, expected", [
    (1, 1, (1, 0)), (2, 1, (1, 1)), (4, 1, (2, 2)), (16, 1, (8, 8)), (40, 1, (32, 8)), (8, 2, (2, 2)), (2, 4, (1, 0))])
def test_cpu_cores_are_split_between_torch_and_the_loader(no_omp, cores, ranks, expected):
    chosen = threads.plan("cpu", ranks, None, None, cores=cores)
    assert (chosen.threads, chosen.workers) == expected
    assert chosen.threads + chosen.workers <= max(1, cores // ranks)  # no more busy threads than cores
    assert f"{cores} core(s) available" in chosen.note and "chosen" in chosen.note


def test_explicit_counts_and_omp_num_threads_win(monkeypatch, no_omp):
    assert (threads.plan("cpu", 1, 3, 0, cores=2).threads, threads.plan("cpu", 1, 3, 0, cores=2).workers) == (3, 0)
    assert threads.plan("cpu", 1, 0, None, cores=2).threads is None  # 0: torch's own count
    assert threads.plan("cpu", 1, None, 5, cores=2).threads == 1  # the cores left after 5 workers: at least one
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    kept = threads.plan("cpu", 1, None, None, cores=2)
    assert kept.threads is None and "OMP_NUM_THREADS" in kept.note


def test_cuda_keeps_torch_threads_and_the_earlier_worker_count(no_omp):
    chosen = threads.plan("cuda", 2, None, None, cores=16)
    assert chosen.threads is None and chosen.workers == 7  # min(8, 16 / 2 - 1)


def test_affinity_decides_the_core_count(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {3})
    assert threads.available_cores() == 1


def test_negative_counts_are_user_errors():
    from fractrain.errors import UserError

    with pytest.raises(UserError, match="--threads must be >= 0"):
        threads.plan("cpu", 1, -1, None, cores=2)
    with pytest.raises(UserError, match="--workers must be >= 0"):
        threads.plan("cpu", 1, None, -2, cores=2)


def test_the_run_log_states_the_choice(tiny_dataset, tmp_path, capsys, no_omp):
    import torch

    from fractrain.cli import main

    before = torch.get_num_threads()
    try:
        assert main(["--shards", str(tiny_dataset), "--model", "vit_tiny", "--input-size", "32", "--model-arg",
                     "patch_size=8", "--model-arg", "depth=1", "--model-arg", "embed_dim=32", "--model-arg",
                     "num_heads=2", "-b", "8", "--steps", "1", "--threads", "1", "--workers", "0", "--device", "cpu",
                     "--no-progress", "--out", str(tmp_path / "run")]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "CPU threads: 1 torch intra-op thread(s) (--threads), 0 loader worker(s) (--workers)" in \
        capsys.readouterr().err
