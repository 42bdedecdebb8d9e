"""DQN fusion: action → α → fused score → prediction mapping, reward, replay buffer, double-DQN target."""

import copy

import pytest
import torch

from kdgat.models import NUM_ACTIONS, QNetwork, alphas, fuse, fusion_reward
from kdgat.training.dqn import ReplayBuffer, double_dqn_targets, epsilon_at


def test_actions_map_to_21_alphas():
    assert NUM_ACTIONS == 21
    assert torch.allclose(alphas(), torch.linspace(0, 1, 21))
    assert float(alphas()[10]) == pytest.approx(0.5)


def test_prediction_is_the_fused_score_above_one_half():
    anomaly = torch.tensor([0.9, 0.9, 0.2, 0.6])
    p_attack = torch.tensor([0.1, 0.1, 0.7, 0.3])
    actions = torch.tensor([0, 20, 10, 10])  # α = 0, 1, 0.5, 0.5
    alpha, score, prediction = fuse(actions, anomaly, p_attack)
    assert torch.allclose(alpha, torch.tensor([0.0, 1.0, 0.5, 0.5]))
    assert torch.allclose(score, torch.tensor([0.9, 0.1, 0.45, 0.45]))
    assert prediction.tolist() == [1, 0, 0, 0]  # not "α > 0.5": actions 10 give 0 here


def test_reward_rewards_correct_fused_predictions_with_margin():
    anomaly, p_attack = torch.tensor([0.9, 0.9]), torch.tensor([0.1, 0.1])
    labels = torch.tensor([1, 1])
    reward = fusion_reward(torch.tensor([0, 20]), anomaly, p_attack, labels)
    assert reward.tolist() == pytest.approx([1.0 + 0.4, -1.0 - 0.4])


def test_replay_buffer_wraps_around():
    buffer = ReplayBuffer(4)
    for start in (0, 3):
        idx = torch.arange(start, start + 3)
        buffer.push(idx, idx, idx.float(), idx + 1, torch.zeros(3))
    assert buffer.size == 4
    assert sorted(buffer.index.tolist()) == [2, 3, 4, 5]
    sample = buffer.sample(16, torch.Generator().manual_seed(0))
    assert set(sample[0].tolist()) <= {2, 3, 4, 5} and torch.equal(sample[1], sample[0])


def test_double_dqn_target_uses_online_argmax_and_target_values():
    online = QNetwork(state_dim=2, hidden=8, num_layers=1, dropout=0.0)
    target = copy.deepcopy(online)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(torch.randn_like(p))
    states = torch.randn(5, 2)
    rewards, done = torch.ones(5), torch.tensor([0.0, 0, 0, 0, 1])
    expected_actions = online(states).argmax(dim=1, keepdim=True)
    expected = rewards + 0.5 * (1 - done) * target(states).gather(1, expected_actions).squeeze(1)
    assert torch.allclose(double_dqn_targets(online, target, states, rewards, done, 0.5), expected)


def test_epsilon_decays_linearly():
    assert epsilon_at(0, 11, 1.0, 0.0) == 1.0
    assert epsilon_at(5, 11, 1.0, 0.0) == pytest.approx(0.5)
    assert epsilon_at(10, 11, 1.0, 0.0) == 0.0


def test_qnetwork_blocks_and_state_standardisation():
    network = QNetwork(state_dim=15, hidden=160, num_layers=2)
    kinds = [type(m).__name__ for m in network.net]
    assert kinds == ["Linear", "LayerNorm", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert "state_mean" in network.state_dict() and "state_std" in network.state_dict()
