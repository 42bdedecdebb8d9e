"""DQN fusion: action → α → fused score → prediction mapping, reward, replay buffer, double-DQN target."""

import copy

import pytest
import torch
import yaml
from testkit import REPO

from kdgat.distillation import q_value_kd_loss
from kdgat.models import NUM_ACTIONS, QNetwork, alphas, fuse, fusion_reward
from kdgat.training.dqn import ReplayBuffer, double_dqn_targets, epsilon_at, kd_row_weights
from kdgat.training.held_out import HOLDOUT_BLOCKS, early_stop_rows
from kdgat.training.settings import MINIMUMS_OF_DQN, SettingsError, StageSettings


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
    # A fused score of exactly 0.5 is no attack, as a GAT p(attack) of 0.5 is not (kdgat.chain.DECISION_THRESHOLD).
    half = torch.tensor([0.5, 0.5])
    assert fuse(torch.tensor([0, 20]), half, half)[2].tolist() == [0, 0]


def test_a_state_with_non_finite_q_values_gets_no_action_and_a_nan_alpha_not_action_zero():
    """argmax over NaN Q-values silently picked action 0: a diverged agent fused as one that trusts the VGAE alone,
    with a finite score that no check could tell from a real choice."""
    dqn = QNetwork().eval()
    state = torch.zeros(3, 15)
    state[1, 0] = float("nan")  # one window's Q-values are all NaN
    with torch.no_grad():
        actions, chosen = dqn.decide(state)
    assert chosen.tolist() == [True, False, True]
    assert torch.equal(actions, dqn.choose(state))
    alpha, score, prediction = fuse(actions, torch.full((3,), 0.9), torch.full((3,), 0.8), chosen)
    assert [torch.isnan(alpha).tolist(), torch.isnan(score).tolist()] == [[False, True, False]] * 2
    assert prediction.tolist() == [1, 0, 1]
    dqn.fallback_action.fill_(4)  # a fallback agent consults no Q-value: every state gets its action
    assert [t.tolist() for t in dqn.decide(state)] == [[4, 4, 4], [True, True, True]]


def test_reward_is_cost_sensitive_correctness_without_a_margin():
    anomaly, p_attack = torch.tensor([0.9, 0.9, 0.9]), torch.tensor([0.1, 0.1, 0.1])
    labels = torch.tensor([1, 1, 1])
    # α = 0 (score 0.9), α = 0.25 (score 0.7): both right, equally rewarded however confident; α = 1: a miss.
    reward = fusion_reward(torch.tensor([0, 5, 20]), anomaly, p_attack, labels, miss_cost=3.0)
    assert reward.tolist() == [1.0, 1.0, -3.0]
    # A false alarm costs false_alarm_cost.
    normal = fusion_reward(
        torch.tensor([0, 20]), anomaly[:2], p_attack[:2], torch.tensor([0, 0]), false_alarm_cost=0.5
    )
    assert normal.tolist() == [-0.5, 1.0]


def test_saturated_input_earns_no_more_than_a_calibrated_one():
    """Review H2: with a margin the saturated GAT (p = 1.0) out-earned the VGAE (0.6) when both were right."""
    anomaly, p_attack, labels = torch.tensor([0.6]), torch.tensor([1.0]), torch.tensor([1])
    trust_vgae, trust_gat = (fusion_reward(torch.tensor([a]), anomaly, p_attack, labels) for a in (0, 20))
    assert torch.equal(trust_vgae, trust_gat)


def test_replay_buffer_wraps_around():
    buffer = ReplayBuffer(4)
    for start in (0, 3):
        idx = torch.arange(start, start + 3)
        buffer.push(idx, idx, idx.float(), idx + 1, torch.zeros(3))
    assert buffer.size == 4
    assert sorted(buffer.index.tolist()) == [2, 3, 4, 5]
    sample = buffer.sample(16, torch.Generator().manual_seed(0))
    assert set(sample[0].tolist()) <= {2, 3, 4, 5} and torch.equal(sample[1], sample[0])


def test_replay_buffer_samples_only_the_transitions_pushed():
    buffer = ReplayBuffer(10)
    pushed = torch.tensor([5, 6, 7])
    buffer.push(pushed, pushed, pushed.float(), pushed + 1, torch.zeros(3))
    sample = buffer.sample(200, torch.Generator().manual_seed(0))
    assert buffer.size == 3
    assert set(sample[0].tolist()) == {5, 6, 7}  # never an empty slot of the 7 not yet filled
    assert torch.equal(sample[1], sample[0]) and torch.equal(sample[3], sample[0] + 1)


def test_double_dqn_target_uses_online_argmax_in_eval_mode_and_target_values():
    torch.manual_seed(0)
    online = QNetwork(state_dim=2, hidden=8, num_layers=1, dropout=0.5).train()
    target = copy.deepcopy(online)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(torch.randn_like(p))
    states = torch.randn(5, 2)
    rewards, done = torch.ones(5), torch.tensor([0.0, 0, 0, 0, 1])
    expected_actions = online.eval()(states).argmax(dim=1, keepdim=True)
    online.train()
    expected = rewards + 0.5 * (1 - done) * target.eval()(states).gather(1, expected_actions).squeeze(1)
    # Dropout is active in the online net (train mode), yet the choice is the deterministic eval-mode argmax.
    for _ in range(3):
        assert torch.allclose(double_dqn_targets(online, target, states, rewards, done, 0.5), expected)
    assert online.training  # left as it was
    # γ = 0 (the default, a contextual bandit): the target is the reward.
    assert torch.equal(double_dqn_targets(online, target, states, rewards, done, 0.0), rewards)


def test_early_stop_rows_are_evenly_spaced_contiguous_blocks():
    held = early_stop_rows(200, 0.25)
    assert int(held.sum()) == 50
    blocks = held.view(20, 10)
    assert (blocks.all(dim=1) | ~blocks.any(dim=1)).all()  # whole blocks of 10 consecutive graphs
    assert torch.nonzero(blocks[:, 0]).view(-1).tolist() == [3, 7, 11, 15, 19]
    assert int(early_stop_rows(7, 0.25).sum()) >= 1
    with pytest.raises(ValueError, match="early_stop_share"):
        early_stop_rows(100, 1.0)


def test_early_stopping_holds_out_5_of_20_contiguous_blocks_of_the_fit_graphs():
    # docs/models.md: "5 of 20 contiguous blocks of the fit windows (`early_stop_share: 0.25`)".
    assert HOLDOUT_BLOCKS == 20
    held = early_stop_rows(200, 0.25).tolist()
    # Maximal runs of held-out rows, as (start, length).
    runs = [
        (start, next((end for end in range(start, 200) if not held[end]), 200) - start)
        for start in range(200)
        if held[start] and (start == 0 or not held[start - 1])
    ]
    assert [length for _, length in runs] == [10] * 5
    assert all(start % 10 == 0 for start, _ in runs)  # each run is one of the 20 blocks of 200 / 20 rows


def test_early_stop_rows_hold_out_at_least_one_block_and_refuse_what_holds_out_nothing_or_everything():
    # A share below one block in 20 still holds out one whole block: early stopping never watches an empty set.
    held = early_stop_rows(200, 0.01)
    assert int(held.sum()) == 200 // HOLDOUT_BLOCKS and bool(held.view(HOLDOUT_BLOCKS, -1).all(dim=1).any())
    # The share must lie in (0, 1): 0 would hold out nothing (and then one block regardless), 1 everything.
    for share in (0.0, -0.25, 1.0):
        with pytest.raises(ValueError, match=r"early_stop_share must lie in \(0, 1\)"):
            early_stop_rows(100, share)
    # One graph cannot be split into fit and stop graphs.
    with pytest.raises(ValueError, match="at least 2 graphs"):
        early_stop_rows(1, 0.25)
    # Fewer graphs than blocks: still some graphs held out, and some left to learn from.
    for count in range(2, 2 * HOLDOUT_BLOCKS):
        assert 0 < int(early_stop_rows(count, 0.25).sum()) < count, count


def test_epsilon_decays_linearly():
    assert epsilon_at(0, 11, 1.0, 0.0) == 1.0
    assert epsilon_at(5, 11, 1.0, 0.0) == pytest.approx(0.5)
    assert epsilon_at(10, 11, 1.0, 0.0) == 0.0


def test_qnetwork_blocks_and_state_standardisation():
    network = QNetwork(state_dim=15, hidden=160, num_layers=2)
    kinds = [type(m).__name__ for m in network.net]
    assert kinds == ["Linear", "LayerNorm", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert "state_mean" in network.state_dict() and "state_std" in network.state_dict()


def test_kd_rows_weigh_only_where_the_teachers_alpha_decides_alike_for_the_student():
    # Teacher Q-rows pick α = 0 for row 0 and α = 1 for rows 1 and 2.
    teacher_q = torch.zeros(3, NUM_ACTIONS)
    teacher_q[0, 0] = teacher_q[1, 20] = teacher_q[2, 20] = 1.0
    teacher = {"anomaly": torch.tensor([0.9, 0.2, 0.2]), "p_attack": torch.tensor([0.1, 0.8, 0.8])}
    # Row 0: α = 0 → teacher 0.9 (attack), student 0.3 (normal): disagree. Row 1: α = 1 → 0.8 vs 0.7: agree.
    # Row 2: α = 1 → 0.8 vs 0.4: disagree.
    student = {"anomaly": torch.tensor([0.3, 0.9, 0.9]), "p_attack": torch.tensor([0.1, 0.7, 0.4])}
    rows = torch.arange(3)
    assert kd_row_weights(teacher_q, teacher, student, rows, "agreement").tolist() == [0.0, 1.0, 0.0]
    assert kd_row_weights(teacher_q, teacher, student, rows, "uniform").tolist() == [1.0, 1.0, 1.0]


def test_weighted_q_value_kd_loss_averages_over_the_weighted_rows():
    student_q, teacher_q = torch.zeros(2, 3), torch.tensor([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]])
    parts = q_value_kd_loss(
        student_q, teacher_q, torch.tensor(0.0), alpha=1.0, weights=torch.tensor([0.0, 1.0])
    )
    assert float(parts["kd"]) == pytest.approx(9.0)  # only row 1 counts
    none = q_value_kd_loss(student_q, teacher_q, torch.tensor(0.0), alpha=1.0, weights=torch.zeros(2))
    assert float(none["kd"]) == 0.0


@pytest.mark.parametrize(
    ("dqn", "message"),
    [
        ({"target_update": 0}, r"kd_gat\.dqn\.target_update must be an integer >= 1, got 0"),
        ({"buffer_size": 0}, r"kd_gat\.dqn\.buffer_size must be an integer >= 1, got 0"),
        ({"steps_per_episode": 1}, r"kd_gat\.dqn\.steps_per_episode must be an integer >= 2, got 1"),
        ({"updates_per_episode": 0}, r"kd_gat\.dqn\.updates_per_episode must be an integer >= 1, got 0"),
        ({"batch_size": -4}, r"kd_gat\.dqn\.batch_size must be an integer >= 1, got -4"),
        (
            {"buffer_size": 64, "batch_size": 65},  # a batch the buffer never holds: no update ever
            r"kd_gat\.dqn\.batch_size must be at most kd_gat\.dqn\.buffer_size \(64; .*got 65",
        ),
        ({"eps_start": 1.5}, r"kd_gat\.dqn\.eps_start must be in \[0, 1\], got 1\.5"),
        ({"eps_end": -0.1}, r"kd_gat\.dqn\.eps_end must be in \[0, 1\], got -0\.1"),
        ({"keep_folds": 1}, r"kd_gat\.dqn\.keep_folds must be 0 or at least 2, got 1"),
        ({"early_stop_share": 0.0}, r"kd_gat\.dqn\.early_stop_share must lie in \(0, 1\), got 0\.0"),
    ],
)
def test_dqn_settings_out_of_range_name_their_config_key(dqn, message):
    with pytest.raises(SettingsError, match=message):
        StageSettings.from_config({"dqn": dqn}, "dqn", "student")


def test_dqn_settings_minimums_are_the_schemas():
    schema = yaml.safe_load((REPO / "workflow/modules/kd_gat/schemas/config.schema.yaml").read_text())
    properties = schema["properties"]["kd_gat"]["properties"]["dqn"]["properties"]
    minimums = {name: spec["minimum"] for name, spec in properties.items() if spec.get("type") == "integer"}
    assert minimums.pop("keep_folds") == 0  # 0 or >= 2, checked on its own
    assert minimums == MINIMUMS_OF_DQN
    least = StageSettings.from_config({"dqn": MINIMUMS_OF_DQN}, "dqn", "student").dqn  # accepted
    assert {name: getattr(least, name) for name in MINIMUMS_OF_DQN} == MINIMUMS_OF_DQN


def test_the_only_episode_of_a_one_episode_run_is_the_last_and_explores_at_eps_end():
    """ε decays linearly over the episodes and the last one acts at eps_end: with one episode, that one."""
    assert epsilon_at(0, 1, 1.0, 0.05) == pytest.approx(0.05)
    assert epsilon_at(1, 2, 1.0, 0.05) == pytest.approx(0.05)


def test_a_state_column_that_never_varies_standardises_to_0_and_is_not_scaled_up():
    """kdgat.training.dqn.standardise_states: a state column constant over the fit states (a constant base score)
    keeps std 1: it standardises to 0, and a later state 0.1 off the constant is 0.1 off, not 0.1 / 1e-6 = 1e5 as
    with the floor of 1e-6 before 2026-12-07 (whose Q-values then depended on that column alone). Float32
    rounding of a constant (0.3 has no exact float) counts as constant too, and so does a large constant."""
    from kdgat.training.dqn import standardise_states

    network = QNetwork(state_dim=4, hidden=8, num_layers=1)
    states = torch.tensor([[0.0, 0.3, 1.0, 2e4], [1.0, 0.3, 2.0, 2e4], [2.0, 0.3, 4.0, 2e4]])
    standardise_states(network, states)
    assert network.state_std[1].item() == 1.0 and network.state_std[3].item() == 1.0
    assert torch.allclose(network.state_mean, states.mean(dim=0))
    later = torch.tensor([[1.0, 0.4, 2.0, 2e4 + 1]])
    standardised = (later - network.state_mean) / network.state_std
    assert standardised[0, 1].item() == pytest.approx(0.1, abs=1e-6)
    assert standardised[0, 3].item() == pytest.approx(1.0, abs=1e-2)
    assert torch.isfinite(network.eval()(states)).all()


def test_a_state_column_that_varies_keeps_its_own_spread_bit_for_bit():
    """Healthy states (every column varies, however little above 1e-6) keep exactly the population std, as the
    floor of 1e-6 before 2026-12-07 left them: the agent's inputs and so its decisions are unchanged."""
    from kdgat.training.dqn import standardise_states

    generator = torch.Generator().manual_seed(0)
    states = torch.rand(64, 15, generator=generator)
    states[:, 2] = 0.5 + 8e-6 * torch.arange(64) / 64  # a tiny but real spread, 2.3e-6, above the old floor
    states[:, 3] *= 1e-3
    network = QNetwork(state_dim=15, hidden=8, num_layers=1)
    standardise_states(network, states)
    plain = states.std(dim=0, unbiased=False)
    assert plain.min() > 1e-6  # the old floor (clamp_min(1e-6)) left every column its own std
    assert torch.equal(network.state_std, plain)
