"""The DQN fusion must earn its place: on base-model outputs where each model is informative on a different
subgroup of graphs, the learnt policy beats both models alone, and no constant α or random policy does.

Synthetic fusion inputs (what kdgat.inference.fusion_inputs gives the agent), two subgroups of graphs:
- subgroup "vgae": the VGAE's calibrated anomaly is informative (0.65 ± 0.05 for attacks, 0.35 ± 0.05 for
  normals) while the GAT's p(attack) is saturated noise (0.02 or 0.98 at random);
- subgroup "gat": the reverse (GAT informative, VGAE saturated noise).
Saturated noise is what review H2 found the old reward chasing: a margin bonus pays most for the saturated input.
The subgroup shows in one latent statistic of the state (as a change of traffic regime would).
"""

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from kdgat.model_store import load_model, save_model
from kdgat.models import LEARNT, NUM_ACTIONS, QNetwork, fuse
from kdgat.models.dqn import STATE_DIM
from kdgat.training import dqn as dqn_training
from kdgat.training import fusion_policy, held_out
from kdgat.training.settings import StageSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ANOMALY, P_ATTACK, Z_MEAN = 7, 9, 3  # state columns, see kdgat.inference.fusion_inputs
MARGIN = 0.1  # how much better than the better input the fusion must be


def fusion_inputs(count: int, seed: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    label = (rng.random(count) < 0.4).astype(np.int64)
    vgae_group = rng.random(count) < 0.5
    informative = np.clip(0.5 + np.where(label == 1, 0.15, -0.15) + rng.normal(0, 0.05, count), 0.01, 0.99)
    saturated_noise = np.where(rng.random(count) < 0.5, 0.02, 0.98)
    anomaly = np.where(vgae_group, informative, saturated_noise)
    p_attack = np.where(vgae_group, saturated_noise, informative)
    state = rng.normal(0, 1, (count, STATE_DIM))
    state[:, Z_MEAN] = vgae_group + rng.normal(0, 0.1, count)
    state[:, ANOMALY] = anomaly
    state[:, P_ATTACK - 1], state[:, P_ATTACK] = 1 - p_attack, p_attack
    as_tensor = {"state": state, "anomaly": anomaly, "p_attack": p_attack}
    inputs = {name: torch.tensor(value, dtype=torch.float32) for name, value in as_tensor.items()}
    return inputs | {"label": torch.from_numpy(label)}


def fused_f1(inputs: dict, actions: torch.Tensor) -> float:
    _, _, prediction = fuse(actions, inputs["anomaly"], inputs["p_attack"])
    return f1_score(inputs["label"].numpy(), prediction.numpy())


def beats_both_inputs(inputs: dict, actions: torch.Tensor) -> tuple[bool, dict]:
    """The check every policy goes through: fused F1 >= max(VGAE alone, GAT alone) + MARGIN."""
    scores = {
        "fusion": fused_f1(inputs, actions),
        "vgae": fused_f1(inputs, torch.zeros_like(actions)),  # α = 0: the VGAE's score > 0.5
        "gat": fused_f1(inputs, torch.full_like(actions, NUM_ACTIONS - 1)),  # α = 1: p(attack) > 0.5
    }
    return scores["fusion"] >= max(scores["vgae"], scores["gat"]) + MARGIN, scores


def settings(seed: int, epochs: int = 60, variant: str = "teacher") -> StageSettings:
    config = {
        "teacher_preset": "demo_teacher",
        "seed": seed,
        "device": "cpu",
        "training": {"dqn": {"epochs": epochs, "lr": 0.003, "patience": epochs, "weight_decay": 0.0}},
        "dqn": {"steps_per_episode": 256, "updates_per_episode": 8, "batch_size": 64, "buffer_size": 5000},
    }
    return StageSettings.from_config(config, "dqn", variant)


@pytest.fixture(scope="module")
def test_inputs():
    return fusion_inputs(3000, seed=99)


def test_constant_and_random_policies_fail_the_check(test_inputs):
    labels = test_inputs["label"]
    for action in range(NUM_ACTIONS):
        passed, scores = beats_both_inputs(test_inputs, torch.full_like(labels, action))
        assert not passed, (action / (NUM_ACTIONS - 1), scores)
    for seed in range(5):
        generator = torch.Generator().manual_seed(seed)
        random_actions = torch.randint(0, NUM_ACTIONS, labels.shape, generator=generator)
        passed, scores = beats_both_inputs(test_inputs, random_actions)
        assert not passed, ("random", scores)


@pytest.mark.parametrize("seed", [0, 1])
def test_learnt_fusion_beats_both_inputs(test_inputs, seed):
    train, stop = fusion_inputs(3000, seed=2 * seed), fusion_inputs(1000, seed=2 * seed + 1)
    model, _, metrics, _ = dqn_training.train(train, stop, settings(seed))
    assert metrics["policy"] == "learnt"  # it beat both inputs on the stop graphs: no fallback
    with torch.no_grad():
        actions = model.eval().choose(test_inputs["state"])
    passed, scores = beats_both_inputs(test_inputs, actions)
    assert passed, scores
    # What the policy learnt: it leans on the VGAE (small α) where the VGAE is informative, on the GAT elsewhere.
    alpha = actions.float() / (NUM_ACTIONS - 1)
    vgae_group = test_inputs["state"][:, Z_MEAN] > 0.5
    assert alpha[vgae_group].mean() < 0.5 < alpha[~vgae_group].mean()
    assert metrics["val_f1"] >= max(metrics["val_gat_f1"], metrics["val_vgae_f1"]) + MARGIN


def one_informative_input(count: int, seed: int, informative: str) -> dict[str, torch.Tensor]:
    """Outputs where one input separates the classes and the other is noise: no policy beats the informative
    input alone, so the best a fusion can do is to copy it."""
    rng = np.random.default_rng(seed)
    label = (rng.random(count) < 0.4).astype(np.int64)
    separating = np.clip(np.where(label == 1, 0.8, 0.2) + rng.normal(0, 0.05, count), 0.01, 0.99)
    noise = rng.random(count)
    anomaly, p_attack = (separating, noise) if informative == "vgae" else (noise, separating)
    state = rng.normal(0, 1, (count, STATE_DIM))
    state[:, ANOMALY] = anomaly
    state[:, P_ATTACK - 1], state[:, P_ATTACK] = 1 - p_attack, p_attack
    as_tensor = {"state": state, "anomaly": anomaly, "p_attack": p_attack}
    inputs = {name: torch.tensor(value, dtype=torch.float32) for name, value in as_tensor.items()}
    return inputs | {"label": torch.from_numpy(label)}


@pytest.mark.parametrize("informative, alpha", [("gat", 1), ("vgae", 0)])
def test_an_agent_that_cannot_beat_an_input_falls_back_to_it(informative, alpha, tmp_path):
    train, stop = (one_informative_input(n, seed, informative) for n, seed in ((600, 0), (300, 1)))
    model, _, metrics, model_config = dqn_training.train(train, stop, settings(0, epochs=10))
    assert metrics["policy"] == f"fixed_alpha_{alpha}" and metrics["policy_judged_on"] == "cross_fit"
    assert metrics["val_reward_learnt"] <= metrics[f"val_reward_fixed_alpha_{alpha}"]
    assert metrics["val_f1"] == pytest.approx(metrics[f"val_f1_alpha_{alpha}"])
    # From now on the agent's decision is the better input's on any graph, and model.pt carries the choice.
    save_model(model, "dqn", model_config, tmp_path / "dqn.pt")
    unseen = one_informative_input(500, 2, informative)
    for agent in (model, load_model(tmp_path / "dqn.pt")):
        actions = agent.eval().choose(unseen["state"])
        assert (actions == alpha * (NUM_ACTIONS - 1)).all()
    # A model.pt written before the fallback existed loads as the learnt policy it is.
    older = {key: value for key, value in model.state_dict().items() if key != "fallback_action"}
    reloaded = type(model)(**model_config)
    reloaded.load_state_dict(older)
    assert int(reloaded.fallback_action) == LEARNT
    assert torch.equal(reloaded.eval().choose(unseen["state"]), reloaded(unseen["state"]).argmax(dim=1))


def scripted_inputs(
    count: int, vgae_right: int, gat_right: int, agent_right: bool
) -> dict[str, torch.Tensor]:
    """`count` graphs, half attacks: of every 10 graphs of each class the VGAE decides right on the first
    `vgae_right`, the GAT on the last `gat_right`. State column 0 holds the action of a scripted agent: the input
    that is right (the GAT where both are) if `agent_right`, else the other one."""
    index = torch.arange(count)
    label = index % 2
    vgae_ok, gat_ok = (index // 2) % 10 < vgae_right, (index // 2) % 10 >= 10 - gat_right

    def decided(right: torch.Tensor) -> torch.Tensor:  # 0.9 where the input says attack, else 0.1
        return torch.where(right, label, 1 - label).float() * 0.8 + 0.1

    right = torch.where(gat_ok | ~vgae_ok, NUM_ACTIONS - 1, 0)
    action = right if agent_right else NUM_ACTIONS - 1 - right
    state = torch.zeros(count, STATE_DIM)
    state[:, 0] = action.float()
    return {"state": state, "anomaly": decided(vgae_ok), "p_attack": decided(gat_ok), "label": label}


class ScriptedAgent(QNetwork):
    """Greedy on the action written in state column 0 (a stand-in for an agent that learnt its fit graphs)."""

    def forward(self, state):
        return torch.nn.functional.one_hot(state[:, 0].long(), NUM_ACTIONS).float()


@pytest.mark.parametrize("agent_right_on_stop, kept", [(False, "fixed_alpha_1"), (True, "learnt")])
def test_the_better_input_is_chosen_on_fit_and_stop_graphs_the_learnt_policy_on_stop_only(
    agent_right_on_stop, kept
):
    # 40 stop graphs alone point to the VGAE (right on 8 of 10 vs the GAT's 7); with the 200 fit graphs (VGAE 6 of
    # 10, GAT 9 of 10) the GAT is the better input. The scripted agent is right on every fit graph where an input
    # is, so judged on fit graphs it would beat both inputs; only its stop graphs may judge it.
    fit = scripted_inputs(200, vgae_right=6, gat_right=9, agent_right=True)
    stop = scripted_inputs(40, vgae_right=8, gat_right=7, agent_right=agent_right_on_stop)
    stage = dqn_training.DQNStage(ScriptedAgent(), fit, stop, settings(0), torch.device("cpu"))
    every_graph = {key: torch.cat([fit[key], stop[key]]) for key in fit}
    learnt_on_every_graph = fusion_policy.balanced_mean(
        stage.policy(every_graph)["reward"], every_graph["label"]
    )
    chosen = fusion_policy.fall_back_unless_better(stage)
    # Judged on fit graphs too, the learnt policy would beat the better input even where it fails every stop graph.
    assert learnt_on_every_graph > chosen["fit_stop_reward_fixed_alpha_1"]
    assert chosen["val_reward_fixed_alpha_0"] > chosen["val_reward_fixed_alpha_1"]  # stop alone: the VGAE
    assert chosen["fit_stop_reward_fixed_alpha_1"] > chosen["fit_stop_reward_fixed_alpha_0"]
    assert chosen["better_input"] == "fixed_alpha_1" and chosen["fit_stop_graphs"] == 240
    assert chosen["policy"] == kept
    assert (chosen["val_reward_learnt"] > chosen["val_reward_fixed_alpha_1"]) == agent_right_on_stop
    actions = stage.model.choose(stop["state"])
    assert torch.equal(
        actions, stop["state"][:, 0].long() if kept == "learnt" else torch.full_like(actions, NUM_ACTIONS - 1)
    )


def test_contiguous_folds_cover_every_graph_once_in_runs():
    fold_of = held_out.contiguous_folds(123, 5)
    assert fold_of.tolist() == sorted(fold_of.tolist())  # contiguous runs in file order
    sizes = torch.bincount(fold_of).tolist()
    assert len(sizes) == 5 and max(sizes) - min(sizes) <= 1 and sum(sizes) == 123
    with pytest.raises(ValueError, match="keep_folds: 5 folds need at least 10 graphs, got 9"):
        held_out.contiguous_folds(9, 5)


def test_each_graph_is_judged_by_a_copy_that_never_saw_it():
    trained_on, judged = [], []

    def train_copy(learn, stop):
        seen = set(learn.tolist()) | set(stop.tolist())
        trained_on.append((set(learn.tolist()), set(stop.tolist())))

        def judge(rows):
            judged.append(set(rows.tolist()))
            return torch.tensor([-1.0 if int(row) in seen else 1.0 for row in rows])  # -1: a leak

        return judge

    rewards = held_out.cross_fitted_rewards(400, 5, 0.25, train_copy)
    assert rewards.shape == (400,) and bool((rewards == 1.0).all())
    assert len(judged) == 5 and set().union(*judged) == set(range(400)) and sum(map(len, judged)) == 400
    for (learn, stop), rows in zip(trained_on, judged, strict=True):
        assert not learn & stop and learn | stop | rows == set(range(400))
        assert 0.2 < len(stop) / (len(learn) + len(stop)) < 0.3  # early_stop_share of the training folds


def test_the_keep_decision_is_cross_fitted_when_given(monkeypatch):
    # The scripted agent is right on every stop graph: judged there alone it is kept. Its cross-fitted rewards
    # (a copy trained without each graph) say otherwise, and then the better input replaces it.
    fit = scripted_inputs(200, vgae_right=6, gat_right=9, agent_right=True)
    stop = scripted_inputs(40, vgae_right=8, gat_right=7, agent_right=True)
    wrong_everywhere = torch.full((240,), -1.0)
    for cross_fitted, kept in (
        (None, "learnt"),
        (wrong_everywhere, "fixed_alpha_1"),
        (-wrong_everywhere, "learnt"),
    ):
        stage = dqn_training.DQNStage(ScriptedAgent(), fit, stop, settings(0), torch.device("cpu"))
        chosen = fusion_policy.fall_back_unless_better(stage, cross_fitted)
        assert chosen["policy"] == kept
        assert chosen["policy_judged_on"] == ("stop" if cross_fitted is None else "cross_fit")
        if cross_fitted is not None:
            assert chosen["cross_fit_reward_learnt"] == pytest.approx(float(cross_fitted[0]))
    with pytest.raises(ValueError, match="cover 10 graphs, the fit \\+ stop graphs are 240"):
        fusion_policy.fall_back_unless_better(stage, torch.ones(10))


def two_noisy_views(count: int, seed: int) -> dict[str, torch.Tensor]:
    """Both inputs see the label through independent noise of the same size: neither is better, and their mean
    (a constant mid α) decides right more often than either alone."""
    rng = np.random.default_rng(seed)
    label = (rng.random(count) < 0.5).astype(np.int64)
    views = [
        np.clip(0.5 + np.where(label == 1, 0.1, -0.1) + rng.normal(0, 0.12, count), 0, 1) for _ in range(2)
    ]
    state = rng.normal(0, 1, (count, STATE_DIM))
    state[:, 0] = rng.integers(0, NUM_ACTIONS, count)  # the scripted agent's action: noise
    inputs = {"state": state, "anomaly": views[0], "p_attack": views[1]}
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in inputs.items()} | {
        "label": torch.from_numpy(label)
    }


def test_a_constant_mid_alpha_that_beats_both_inputs_replaces_a_learnt_policy_that_does_not():
    fit, stop = two_noisy_views(600, seed=0), two_noisy_views(200, seed=1)
    stage = dqn_training.DQNStage(ScriptedAgent(), fit, stop, settings(0), torch.device("cpu"))
    chosen = fusion_policy.fall_back_unless_better(stage)
    assert chosen["best_fixed"] not in fusion_policy.INPUT_POLICIES
    alpha = fusion_policy.FIXED_POLICIES[chosen["best_fixed"]] / (NUM_ACTIONS - 1)
    assert 0.25 <= alpha <= 0.75, chosen
    inputs_best = max(chosen["fit_stop_reward_fixed_alpha_0"], chosen["fit_stop_reward_fixed_alpha_1"])
    assert chosen["fit_stop_reward_best_fixed"] > inputs_best + 0.05, chosen
    assert chosen["policy"] == chosen["best_fixed"]  # the random scripted agent does not beat it
    actions = stage.model.choose(stop["state"])
    assert (actions == fusion_policy.FIXED_POLICIES[chosen["best_fixed"]]).all()


def test_a_distilled_agent_is_cross_fitted_with_the_teachers_rows_of_the_same_graphs():
    fit, stop = fusion_inputs(200, seed=0), fusion_inputs(100, seed=1)
    teacher = QNetwork().eval()
    with pytest.raises(ValueError, match="needs the teacher's stop inputs"):
        dqn_training.train(fit, stop, settings(0, epochs=2), teacher=teacher, teacher_inputs=fit)
    distilled = settings(0, epochs=2, variant="student_kd")
    *_, metrics, _ = dqn_training.train(
        fit, stop, distilled, teacher=teacher, teacher_inputs=fit, teacher_val_inputs=stop
    )
    assert metrics["policy_judged_on"] == "cross_fit" and metrics["fit_stop_graphs"] == 300
    assert -1.0 <= metrics["cross_fit_reward_learnt"] <= 1.0
