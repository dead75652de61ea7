"""SAC pieces: batched twin critics, Polyak targets, checkpoint round trip, and that it learns."""

from __future__ import annotations

import numpy as np
import torch

from tomrepro.core.config import SACConfig
from tomrepro.learning.policy import SnapshotPolicy
from tomrepro.learning.sac import SAC, SACBatch

CPU = torch.device("cpu")


def _agent(seed: int = 0, **cfg) -> SAC:
    config = SACConfig(**{"hidden_sizes": (32, 32), "batch_size": 64, **cfg})
    return SAC(3, 2, -np.ones(2), np.ones(2), config, CPU, torch.Generator().manual_seed(seed))


def _batch(seed: int, size: int = 64) -> SACBatch:
    g = torch.Generator().manual_seed(seed)
    return SACBatch(
        torch.randn(size, 3, generator=g),
        torch.rand(size, 2, generator=g) * 2 - 1,
        torch.randn(size, generator=g),
        torch.randn(size, 3, generator=g),
        (torch.rand(size, generator=g) > 0.1).float(),
    )


def test_twin_critic_equals_two_separate_mlps():
    sac = _agent()
    obs, act = torch.randn(5, 3), torch.randn(5, 2)
    x = torch.cat((obs, act), dim=-1)
    for member in range(2):
        h = x
        for i, layer in enumerate(sac.critic.net.layers):
            h = h @ layer.weight[member] + layer.bias[member, 0]
            if i < len(sac.critic.net.layers) - 1:
                h = torch.relu(h)
        torch.testing.assert_close(sac.critic(obs, act)[member], h.squeeze(-1))


def test_target_critic_moves_by_tau_toward_the_online_critic():
    sac = _agent(tau=0.1)
    before = [p.clone() for p in sac.critic_target.parameters()]
    sac.update(_batch(0))
    for old, target, online in zip(
        before, sac.critic_target.parameters(), sac.critic.parameters(), strict=True
    ):
        torch.testing.assert_close(target, 0.9 * old + 0.1 * online)


def test_actor_update_leaves_the_critic_untouched():
    sac = _agent()
    sac.update(_batch(0))
    critic_before = [p.clone() for p in sac.critic.parameters()]
    grads_before = [p.grad.clone() for p in sac.critic.parameters()]
    batch = _batch(1)
    action, log_prob = sac.actor.sample(batch.observations, sac.generator)
    loss = (log_prob - sac.critic(batch.observations, action).amin(0)).mean()
    loss.backward(inputs=sac._actor_params)
    for p, before, grad in zip(sac.critic.parameters(), critic_before, grads_before, strict=True):
        torch.testing.assert_close(p, before)
        torch.testing.assert_close(p.grad, grad)


def test_checkpoint_round_trip_continues_identically():
    a = _agent(seed=1)
    for i in range(5):
        a.update(_batch(i))
    b = _agent(seed=99)
    b.load_state_dict(a.state_dict())
    for i in range(5, 8):
        torch.testing.assert_close(a.update(_batch(i)), b.update(_batch(i)), rtol=0, atol=0)
    for pa, pb in zip(a.actor.parameters(), b.actor.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_numpy_snapshot_policy_matches_the_torch_actor():
    sac = _agent(seed=2)
    policy = SnapshotPolicy(sac.actor_arrays())
    obs, noise = torch.randn(16, 3), torch.randn(16, 2)
    with torch.no_grad():
        expected = sac.actor.act(obs, noise).numpy()
    np.testing.assert_allclose(policy.act_batch(obs.numpy(), noise.numpy()), expected, atol=1e-6)
    for i in range(3):
        np.testing.assert_allclose(
            policy.act(obs[i].numpy(), noise[i].numpy()), expected[i], atol=1e-6
        )


def test_sac_moves_its_policy_to_the_best_action_of_a_one_step_problem():
    """Reward -10 |a - target|^2 with immediate termination.

    The mean action must close most of the gap to the target. It does not reach it exactly: the
    entropy bonus of a tanh-squashed policy pulls the mean toward 0 (by about 0.1 here).
    """
    sac = _agent(seed=3, lr=3e-3)
    target = torch.tensor([0.3, -0.5])
    g = torch.Generator().manual_seed(4)
    probe = torch.randn(256, 3, generator=g)
    with torch.no_grad():
        initial = sac.actor.act(probe, torch.zeros(256, 2)).mean(0)
    for _ in range(1200):
        obs = torch.randn(64, 3, generator=g)
        act = torch.rand(64, 2, generator=g) * 2 - 1
        reward = -(act - target).square().sum(-1) * 10
        sac.update(SACBatch(obs, act, reward, obs, torch.zeros(64)))
    with torch.no_grad():
        trained = sac.actor.act(probe, torch.zeros(256, 2)).mean(0)
    gap_before, gap_after = (initial - target).norm(), (trained - target).norm()
    assert gap_after < 0.2, trained
    assert gap_after < 0.5 * gap_before, (initial, trained)
