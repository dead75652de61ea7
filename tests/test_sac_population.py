"""A population of R SAC runs in one object: each run does exactly what it would do alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tomrepro.core.config import SACConfig
from tomrepro.learning.sac import SAC, SACBatch

CPU = torch.device("cpu")
CFG = SACConfig(hidden_sizes=(32, 32), batch_size=64)


def _agent(seeds: list[int], obs: int = 3, act: int = 2, cfg: SACConfig = CFG) -> SAC:
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return SAC(obs, act, -np.ones(act), np.ones(act), cfg, CPU, generators)


def _batch(seed: int, size: int = 64, obs: int = 3, act: int = 2) -> SACBatch:
    g = torch.Generator().manual_seed(seed)
    return SACBatch(
        torch.randn(size, obs, generator=g),
        torch.rand(size, act, generator=g) * 2 - 1,
        torch.randn(size, generator=g) * 10,
        torch.randn(size, obs, generator=g),
        (torch.rand(size, generator=g) > 0.1).float(),
    )


def _stacked(batches: list[SACBatch]) -> SACBatch:
    columns = zip(*(vars(b).values() for b in batches), strict=True)
    return SACBatch(*(torch.stack(column) for column in columns))


def _assert_same_state(a: dict, b: dict) -> None:
    for key in ("actor", "critic", "critic_target"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert torch.equal(a["log_alpha"], b["log_alpha"])
    for key in ("actor_opt", "critic_opt", "alpha_opt"):
        assert a[key]["step"] == b[key]["step"]
        for moment in ("exp_avg", "exp_avg_sq"):
            for i, (x, y) in enumerate(zip(a[key][moment], b[key][moment], strict=True)):
                assert torch.equal(x, y), (key, moment, i)
    assert torch.equal(a["generator"], b["generator"])


def test_each_run_of_a_population_is_bit_identical_to_that_run_alone():
    seeds = [11, 12, 13]
    population = _agent(seeds)
    alone = [_agent([s]) for s in seeds]
    for r in range(len(seeds)):
        _assert_same_state(population.state_dict(r), alone[r].state_dict())
    for step in range(30):
        batches = [_batch(1000 * r + step) for r in range(len(seeds))]
        stats = population.update(_stacked(batches))
        for r, agent in enumerate(alone):
            assert torch.equal(stats[r], agent.update(batches[r]))
    for r, agent in enumerate(alone):
        _assert_same_state(population.state_dict(r), agent.state_dict())


def test_a_run_does_not_depend_on_its_company():
    """Run 0 paired with different partners (whose losses differ) ends in the same state."""
    ends = []
    for partner in (21, 99):
        population = _agent([5, partner])
        for step in range(20):
            population.update(_stacked([_batch(step), _batch(500 + partner + step)]))
        ends.append(population.state_dict(0))
    _assert_same_state(*ends)


def test_a_run_saved_alone_resumes_inside_a_population():
    alone, other = _agent([7]), _agent([8])
    for step in range(5):
        alone.update(_batch(step))
        other.update(_batch(100 + step))
    population = _agent([1, 2])
    population.load_state_dict(alone.state_dict(), run=0)
    population.load_state_dict(other.state_dict(), run=1)
    for step in range(5, 10):
        population.update(_stacked([_batch(step), _batch(100 + step)]))
        alone.update(_batch(step))
    _assert_same_state(population.state_dict(0), alone.state_dict())


def test_population_misuse_is_refused():
    population = _agent([1, 2])
    with pytest.raises(ValueError, match=r"needs \(R, B, \.\.\.\)"):
        population.update(_batch(0))
    with pytest.raises(ValueError, match="pass `run`"):
        population.state_dict()
    with pytest.raises(ValueError, match="one generator per run"):
        _ = population.generator


@pytest.mark.parametrize(("obs", "act"), [(11, 3), (17, 6), (4, 1)])
def test_the_default_networks_of_real_tasks_are_bit_identical_in_a_population(obs, act):
    """256 x 256 networks, batch 256, the sizes of Hopper, Walker2d / HalfCheetah and
    InvertedPendulum (one CPU matmul over all runs would differ from a run alone for Hopper's)."""
    cfg = SACConfig(hidden_sizes=(256, 256), batch_size=256)
    population = _agent([1, 2, 3], obs, act, cfg)
    alone = [_agent([s], obs, act, cfg) for s in (1, 2, 3)]
    for step in range(5):
        batches = [_batch(100 * r + step, 256, obs, act) for r in range(3)]
        population.update(_stacked(batches))
        for r, agent in enumerate(alone):
            agent.update(batches[r])
    for r, agent in enumerate(alone):
        _assert_same_state(population.state_dict(r), agent.state_dict())
