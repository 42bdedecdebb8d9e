"""The DQN fusion must earn its place: on base-model outputs where each model is informative on a different
subgroup of graphs, the learnt policy beats both models alone, and no constant α or random policy does.

Synthetic fusion inputs (what kdgat.inference.fusion_inputs gives the agent), two subgroups of graphs:
- subgroup "vgae": the VGAE's calibrated anomaly is informative (0.65 ± 0.05 for attacks, 0.35 ± 0.05 for
  normals) while the GAT's p(attack) is saturated noise (0.02 or 0.98 at random);
- subgroup "gat": the reverse (GAT informative, VGAE saturated noise).
Saturated noise is what review H2 found the old reward chasing: a margin bonus pays most for the saturated input.
The subgroup shows in one latent statistic of the state (as a change of traffic regime would).
"""

import copy

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


def settings(seed: int, epochs: int = 60, variant: str = "teacher", **dqn) -> StageSettings:
    rl = {"steps_per_episode": 256, "updates_per_episode": 8, "batch_size": 64, "buffer_size": 5000} | dqn
    config = {
        "teacher_preset": "demo_teacher",
        "seed": seed,
        "device": "cpu",
        "training": {"dqn": {"epochs": epochs, "lr": 0.003, "patience": epochs, "weight_decay": 0.0}},
        "dqn": rl,
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


@pytest.mark.parametrize("share", [0.1, 0.5])
def test_each_copy_early_stops_on_early_stop_share_of_its_training_folds(share):
    shares = []

    def train_copy(learn, stop):
        shares.append(len(stop) / (len(learn) + len(stop)))
        return lambda rows: torch.zeros(len(rows))

    held_out.cross_fitted_rewards(400, 4, share, train_copy)
    assert shares == pytest.approx([share] * 4, abs=1 / held_out.HOLDOUT_BLOCKS)  # to a block of 20


def test_the_copies_are_cut_by_keep_folds_and_early_stop_on_early_stop_share(monkeypatch):
    """kdgat.training.dqn.train: the agent learns from the fit graphs and stops on the stop graphs; then one copy
    per fold of kd_gat.dqn.keep_folds learns from the other folds of fit + stop, kd_gat.dqn.early_stop_share of
    their blocks held out for its early stopping."""
    fit, stop = fusion_inputs(200, seed=0), fusion_inputs(100, seed=1)
    fitted = []
    fit_agent = dqn_training.fit_agent

    def recording(train_inputs, val_inputs, *args):
        fitted.append((len(train_inputs["label"]), len(val_inputs["label"])))
        return fit_agent(train_inputs, val_inputs, *args)

    monkeypatch.setattr(dqn_training, "fit_agent", recording)
    dqn_training.train(fit, stop, settings(0, epochs=2, keep_folds=3, early_stop_share=0.5))
    agent, *copies = fitted
    assert agent == (200, 100) and len(copies) == 3
    for learn, held in copies:
        assert learn + held == 200  # the two other folds of the 300 fit + stop graphs
        assert held / (learn + held) == pytest.approx(0.5, abs=1 / held_out.HOLDOUT_BLOCKS)


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
    # Cross-fitted (the default, keep_folds > 0) the rival is that constant too, not the better input: a learnt
    # reward between the two is not kept.
    between = (inputs_best + chosen["fit_stop_reward_best_fixed"]) / 2
    stage = dqn_training.DQNStage(ScriptedAgent(), fit, stop, settings(0), torch.device("cpu"))
    cross_fit = fusion_policy.fall_back_unless_better(stage, torch.full((800,), between))
    assert cross_fit["cross_fit_reward_learnt"] == pytest.approx(between)
    assert cross_fit["policy"] == chosen["best_fixed"]


def test_balanced_mean_weighs_both_classes_alike_and_a_tie_of_constants_goes_to_the_gat_then_the_vgae():
    values, labels = torch.tensor([1.0, 1.0, 1.0, 0.0]), torch.tensor([0, 0, 0, 1])
    assert fusion_policy.balanced_mean(values, labels) == pytest.approx(0.5)  # not the plain mean, 0.75
    assert fusion_policy.balanced_mean(values[:3], labels[:3]) == 1.0  # one class present: its mean
    # Both inputs give the same score on every graph: every constant α ties.
    inputs = fusion_inputs(200, seed=0)
    inputs["p_attack"] = inputs["anomaly"].clone()
    inputs["state"][:, 0] = 0  # the scripted agent's action (α = 0)
    stage = dqn_training.DQNStage(ScriptedAgent(), inputs, inputs, settings(0), torch.device("cpu"))
    chosen = fusion_policy.fall_back_unless_better(stage)
    assert chosen["best_fixed"] == chosen["better_input"] == "fixed_alpha_1"


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


def test_the_copies_of_a_distilled_agent_learn_from_its_teacher_on_the_teachers_rows_of_fit_and_stop():
    """With keep_folds, each copy of a distilled agent is distilled from the same teacher, which rates every graph
    from its own fusion inputs: ``teacher_inputs`` for the fit graphs, ``teacher_val_inputs`` for the stop graphs
    (the copies learn from both)."""
    fit, stop = fusion_inputs(200, seed=0), fusion_inputs(100, seed=1)
    own = {
        name: inputs | {"state": inputs["state"] + 100.0} for name, inputs in (("fit", fit), ("stop", stop))
    }
    teacher = QNetwork().eval()
    seen = []
    teacher.register_forward_hook(lambda module, args, output: seen.append(args[0].clone()))
    distilled = settings(0, epochs=2, variant="student_kd", keep_folds=3)
    dqn_training.train(
        fit, stop, distilled, teacher=teacher, teacher_inputs=own["fit"], teacher_val_inputs=own["stop"]
    )

    def rows_of(states: torch.Tensor, inputs: dict) -> torch.Tensor:
        return (states[:, None] == inputs["state"][None]).all(dim=2).any(dim=1)

    states = torch.cat(seen)
    assert (rows_of(states, own["fit"]) | rows_of(states, own["stop"])).all()  # the teacher's own rows only
    assert rows_of(states, own["stop"]).any()  # the copies learnt from stop graphs too, from this teacher


def test_teacher_inputs_of_other_graphs_are_refused():
    fit = fusion_inputs(200, seed=0)
    student = settings(0, variant="student_kd")
    for count in (150, 250):
        teacher = (QNetwork(**dict(student.model)), fusion_inputs(count, seed=1))
        with pytest.raises(ValueError, match="the teacher's fusion inputs must cover the same graphs"):
            dqn_training.DQNStage(
                QNetwork(**dict(student.model)), fit, fit, student, torch.device("cpu"), teacher
            )


def stage_of(
    fit: dict, stop: dict, dqn: dict, model=None, variant="teacher", **config
) -> dqn_training.DQNStage:
    section = {"seed": 0, "device": "cpu", "teacher_preset": "demo_teacher", "student_preset": "demo_student",
               "dqn": dqn, **config}  # fmt: skip
    stage_settings = StageSettings.from_config(section, "dqn", variant)
    model = QNetwork(**dict(stage_settings.model)) if model is None else model
    return dqn_training.DQNStage(model, fit, stop, stage_settings, torch.device("cpu"))


def test_the_stage_rewards_a_miss_and_a_false_alarm_at_their_configured_costs():
    # α = 0 (the VGAE) misses the first attack, raises a false alarm on the normal, is right on the last attack.
    inputs = {"state": torch.zeros(3, STATE_DIM), "anomaly": torch.tensor([0.1, 0.9, 0.9]),
              "p_attack": torch.tensor([0.9, 0.1, 0.1]), "label": torch.tensor([1, 0, 1])}  # fmt: skip
    stage = stage_of(inputs, inputs, {"miss_cost": 3.0, "false_alarm_cost": 0.5})
    assert stage.reward(torch.zeros(3, dtype=torch.long), inputs).tolist() == [-3.0, -0.5, 1.0]


def test_exploration_is_epsilon_greedy_and_episodes_are_class_balanced():
    # 10% attacks; the scripted agent's greedy action is 3 for every graph.
    count = 4000
    inputs = {"state": torch.zeros(count, STATE_DIM), "anomaly": torch.rand(count), "p_attack": torch.rand(count),
              "label": (torch.arange(count) % 10 == 0).long()}  # fmt: skip
    inputs["state"][:, 0] = 3
    stage = stage_of(inputs, inputs, {}, model=ScriptedAgent())
    assert (stage.act(inputs["state"], 0.0) == 3).all()
    shares = {eps: float((stage.act(inputs["state"], eps) == 3).float().mean()) for eps in (0.5, 1.0)}
    # ε of the actions are uniform over the 21 actions: greedy share 1 − ε + ε/21.
    assert shares[1.0] == pytest.approx(1 / NUM_ACTIONS, abs=0.02)
    assert shares[0.5] == pytest.approx(0.5 + 0.5 / NUM_ACTIONS, abs=0.04)
    rows = stage.episode_rows(1001)
    assert len(rows) == 1001 and int(inputs["label"][rows].sum()) == 500  # half attacks, not the file's 10%


def test_an_episode_explores_at_the_scheduled_epsilon():
    fit = fusion_inputs(200, seed=0)
    dqn = {
        "eps_start": 0.9,
        "eps_end": 0.1,
        "steps_per_episode": 32,
        "updates_per_episode": 1,
        "batch_size": 8,
    }
    stage = stage_of(fit, fit, dqn, training={"dqn": {"epochs": 5}})
    epsilons = [stage.train_epoch(episode)["epsilon"] for episode in range(5)]
    assert epsilons == pytest.approx([0.9, 0.7, 0.5, 0.3, 0.1])


def test_each_episode_acts_epsilon_greedily_at_its_scheduled_epsilon():
    # The scripted agent's greedy action is 3 for every graph; the buffer never holds a batch: no update.
    steps, episodes = 400, 5
    fit = fusion_inputs(200, seed=0)
    fit["state"][:, 0] = 3
    dqn = {"eps_start": 0.9, "eps_end": 0.1, "steps_per_episode": steps, "updates_per_episode": 1,
           "batch_size": 4096, "buffer_size": 4096}  # fmt: skip
    stage = stage_of(fit, fit, dqn, model=ScriptedAgent(), training={"dqn": {"epochs": episodes}})
    for episode in range(episodes):
        epsilon = stage.train_epoch(episode)["epsilon"]
        actions = stage.buffer.action[episode * steps : (episode + 1) * steps]
        # ε of the actions uniform over the 21 actions: greedy share 1 − ε + ε/21 (0.14 at ε = 0.9).
        greedy = float((actions == 3).float().mean())
        assert greedy == pytest.approx(1 - epsilon + epsilon / NUM_ACTIONS, abs=0.08), episode


def test_an_episode_is_a_stream_whose_last_graph_has_no_next_graph():
    fit = fusion_inputs(200, seed=0)
    dqn = {"gamma": 0.5, "steps_per_episode": 32, "updates_per_episode": 1, "batch_size": 8}
    stage = stage_of(fit, fit, dqn)
    stage.train_epoch(0)
    buffer = stage.buffer
    assert buffer.size == 32
    assert torch.equal(
        buffer.next_index[:31], buffer.index[1:32]
    )  # each graph's next: the episode's next graph
    # The last graph has none (its target is the reward alone): not the episode's first, which its next_index holds.
    assert buffer.done[:32].tolist() == [0.0] * 31 + [1.0]


def test_a_buffer_that_holds_one_batch_is_learnt_from():
    # kd_gat.dqn.batch_size may equal buffer_size (the settings accept it): the first full batch is sampled.
    fit = fusion_inputs(200, seed=0)
    dqn = {"steps_per_episode": 16, "updates_per_episode": 3, "batch_size": 16, "buffer_size": 16}
    stage = stage_of(fit, fit, dqn)
    before = copy.deepcopy(stage.model.state_dict())
    metrics = stage.train_epoch(0)
    assert stage.updates == 3 and "train_loss" in metrics
    assert any(not torch.equal(before[key], value) for key, value in stage.model.state_dict().items())


def test_early_stopping_watches_the_class_balanced_reward_of_the_greedy_policy():
    # 9 normals per attack. The scripted agent's α = 0 trusts the VGAE, which calls every graph normal: right on
    # every normal (+1), a miss on every attack (−miss_cost).
    count, miss_cost = 100, 3.0
    inputs = {"state": torch.zeros(count, STATE_DIM), "anomaly": torch.full((count,), 0.1),
              "p_attack": torch.full((count,), 0.9), "label": (torch.arange(count) % 10 == 0).long()}  # fmt: skip
    stage = stage_of(inputs, inputs, {"miss_cost": miss_cost}, model=ScriptedAgent())
    validated = stage.validate()
    assert validated["val_reward"] == pytest.approx((1.0 - miss_cost) / 2)  # not the plain mean, 0.9 − 0.1·3
    assert validated["val_loss"] == -validated["val_reward"]  # the loop minimises the loss


def test_the_target_network_is_a_copy_of_the_agent_synced_every_target_update_steps():
    fit = fusion_inputs(200, seed=0)
    dqn = {
        "gamma": 0.5,
        "target_update": 3,
        "steps_per_episode": 32,
        "updates_per_episode": 4,
        "batch_size": 8,
    }
    stage = stage_of(fit, fit, dqn)
    initial = copy.deepcopy(stage.target.state_dict())
    after_update = []
    step = stage.step

    def recording(loss):
        step(loss)
        after_update.append(copy.deepcopy(stage.model.state_dict()))

    stage.step = recording
    stage.train_epoch(0)
    assert len(after_update) == 4 and stage.updates == 4

    def same(a, b):
        return all(torch.equal(a[key], b[key]) for key in a)

    assert same(stage.target.state_dict(), after_update[2])  # synced after the 3rd update, not since
    assert not same(stage.target.state_dict(), after_update[3]) and not same(initial, after_update[2])


def test_a_distilled_episode_weighs_q_value_distillation_by_alpha_and_agreement():
    fit = fusion_inputs(200, seed=0)
    # The teacher's base models decide the opposite of the student's on every graph, whatever α.
    teacher_inputs = fit | {"anomaly": 1 - fit["anomaly"], "p_attack": 1 - fit["p_attack"]}
    dqn = {"steps_per_episode": 64, "updates_per_episode": 4, "batch_size": 16}
    totals = {}
    for weighting in ("uniform", "agreement"):
        stage = stage_of(fit, fit, dqn | {"kd_weighting": weighting}, variant="student_kd",
                         distillation={"alpha": 0.25})  # fmt: skip
        stage.teacher = copy.deepcopy(stage.model).eval()  # a different agent of the same shape
        with torch.no_grad():
            for parameter in stage.teacher.parameters():
                parameter.add_(torch.randn_like(parameter))
        stage.teacher_inputs = teacher_inputs
        totals[weighting] = stage.train_epoch(0)
    uniform, agreement = totals["uniform"], totals["agreement"]
    assert uniform["train_kd_weight"] == 1.0 and agreement["train_kd_weight"] == 0.0
    assert agreement["train_kd"] == 0.0 and uniform["train_kd"] > 0
    # loss = α·kd + (1 − α)·td per update, so also for the episode's means.
    expected = 0.25 * uniform["train_kd"] + 0.75 * uniform["train_td"]
    assert uniform["train_loss"] == pytest.approx(expected, rel=1e-5)


def test_a_learnt_policy_that_only_ties_the_best_constant_is_not_kept():
    # The scripted agent picks α = 1 for every graph: the GAT's decision, exactly the best constant's reward.
    fit = scripted_inputs(200, vgae_right=6, gat_right=9, agent_right=True)
    stop = scripted_inputs(40, vgae_right=8, gat_right=7, agent_right=True)
    for inputs in (fit, stop):
        inputs["state"][:, 0] = NUM_ACTIONS - 1
    stage = dqn_training.DQNStage(ScriptedAgent(), fit, stop, settings(0), torch.device("cpu"))
    chosen = fusion_policy.fall_back_unless_better(stage)
    assert chosen["best_fixed"] == "fixed_alpha_1"
    assert chosen["val_reward_learnt"] == chosen["val_reward_fixed_alpha_1"]
    assert chosen["policy"] == "fixed_alpha_1"  # kept only if above
    # Cross-fitted: the copies' rewards are those of α = 1 on every fit and stop graph.
    both = held_out.joined(fit, stop)
    tied = stage.reward(torch.full_like(both["label"], NUM_ACTIONS - 1), both)
    chosen = fusion_policy.fall_back_unless_better(stage, tied)
    assert chosen["cross_fit_reward_learnt"] == chosen["fit_stop_reward_best_fixed"]
    assert chosen["policy"] == "fixed_alpha_1"


def test_the_teacher_rates_each_graph_from_the_state_its_own_base_models_give_it():
    """kdgat.training.dqn: the teacher's Q-row for a graph is computed from the teacher's own fusion inputs for
    that graph (its own VGAE and GAT), never from the student's state of it."""
    fit = fusion_inputs(200, seed=0)
    teacher_inputs = fit | {"state": fit["state"] + 100.0}  # told apart from the student's states at a glance
    section = {"seed": 0, "device": "cpu", "student_preset": "demo_student", "distillation": {"alpha": 0.5},
               "dqn": {"steps_per_episode": 64, "updates_per_episode": 4, "batch_size": 16}}  # fmt: skip
    student = StageSettings.from_config(section, "dqn", "student_kd")
    teacher = QNetwork(**dict(student.model))
    seen = []
    teacher.register_forward_hook(lambda module, args, output: seen.append(args[0].clone()))
    stage = dqn_training.DQNStage(
        QNetwork(**dict(student.model)), fit, fit, student, torch.device("cpu"), (teacher, teacher_inputs)
    )
    stage.train_epoch(0)
    assert len(seen) == 4  # one Q-row batch per update
    for states in seen:
        assert (states[:, None] == teacher_inputs["state"][None]).all(dim=2).any(dim=1).all()  # its own rows


def test_the_agent_standardises_states_with_the_statistics_of_its_fit_states():
    """QNetwork: the state is standardised with the mean and spread of the training (fit) states, which
    model.pt carries; the stop states, here shifted, play no part."""
    fit, stop = fusion_inputs(200, seed=0), fusion_inputs(100, seed=1)
    stop["state"] = stop["state"] + 5.0
    model, *_ = dqn_training.train(fit, stop, settings(0, epochs=2))
    assert torch.allclose(model.state_mean, fit["state"].mean(dim=0))
    assert torch.allclose(model.state_std, fit["state"].std(dim=0, unbiased=False))


def test_the_policy_report_compares_the_decisions_with_each_base_models_own():
    """fusion_policy.policy_report on a policy that copies the GAT (α = 1): it agrees with the GAT's decision
    (p(attack) > 0.5) on every graph, with the VGAE's (anomaly > 0.5) where the two decide alike."""
    inputs = fusion_inputs(300, seed=0)
    labels = inputs["label"].numpy()
    gat, vgae = (inputs["p_attack"] > 0.5).long(), (inputs["anomaly"] > 0.5).long()
    alike = float((gat == vgae).float().mean())
    assert 0 < alike < 1  # the inputs disagree on some graphs
    report = fusion_policy.policy_report(torch.ones(300), gat, inputs)
    assert report["val_agrees_with_gat"] == 1.0
    assert report["val_agrees_with_vgae"] == pytest.approx(alike)
    assert report["val_gat_f1"] == pytest.approx(f1_score(labels, gat.numpy()))
    assert report["val_vgae_f1"] == pytest.approx(f1_score(labels, vgae.numpy()))
    assert report["val_gat_f1"] != pytest.approx(report["val_vgae_f1"])
    assert report["alpha_histogram"] == [0] * (NUM_ACTIONS - 1) + [300]


def test_an_episode_of_fit_graphs_of_one_class_draws_from_all_of_them():
    """kdgat.training.dqn.DQNStage.episode_rows: episodes are half normal, half attack; fit graphs of one class
    only (no attack to balance with) give a stream drawn from all of them instead of an error."""
    count = 50
    inputs = {"state": torch.zeros(count, STATE_DIM), "anomaly": torch.rand(count), "p_attack": torch.rand(count),
              "label": torch.zeros(count, dtype=torch.long)}  # fmt: skip
    rows = stage_of(inputs, inputs, {}).episode_rows(64)
    assert len(rows) == 64 and 0 <= int(rows.min()) and int(rows.max()) < count
    assert len(set(rows.tolist())) > 1


def test_dqn_distillation_is_refused_without_both_the_teacher_agent_and_its_fusion_inputs():
    """kdgat.training.dqn.train: the teacher's fusion inputs without its agent (or the reverse) is refused, not a
    plain agent trained as if distilled."""
    fit = fusion_inputs(60, seed=0)
    with pytest.raises(
        ValueError, match="DQN distillation needs both the teacher agent and its fusion inputs"
    ):
        dqn_training.train(fit, fit, settings(0, epochs=1), teacher_inputs=fit)
    with pytest.raises(
        ValueError, match="DQN distillation needs both the teacher agent and its fusion inputs"
    ):
        dqn_training.train(fit, fit, settings(0, epochs=1), teacher=QNetwork())


def test_the_alpha_histogram_has_a_bin_for_every_action_even_those_the_policy_never_takes():
    """fusion_policy.policy_report: metrics.json's alpha_histogram counts the stop graphs at each of the
    NUM_ACTIONS α values, 0 for the α no graph got (here α = 0 and 0.5 only: the upper bins are all 0)."""
    inputs = fusion_inputs(30, seed=0)
    alpha = torch.cat([torch.zeros(20), torch.full((10,), 0.5)])
    report = fusion_policy.policy_report(alpha, (inputs["p_attack"] > 0.5).long(), inputs)
    expected = [0] * NUM_ACTIONS
    expected[0], expected[NUM_ACTIONS // 2] = 20, 10
    assert report["alpha_histogram"] == expected
    assert report["val_alpha_mean"] == pytest.approx(1 / 6)


def test_the_policy_report_counts_graphs_without_an_alpha_apart_instead_of_crashing_on_them():
    """fusion_policy.policy_report: where the agent's Q-values are not finite its α is NaN (QNetwork.decide), which
    np.bincount refused with a numpy traceback; such graphs are counted in alpha_no_choice, outside the histogram
    and the mean α."""
    inputs = fusion_inputs(10, seed=0)
    alpha = torch.full((10,), 0.5)
    alpha[[3, 7]] = float("nan")
    report = fusion_policy.policy_report(alpha, (inputs["p_attack"] > 0.5).long(), inputs)
    expected = [0] * NUM_ACTIONS
    expected[NUM_ACTIONS // 2] = 8
    assert report["alpha_histogram"] == expected
    assert report["alpha_no_choice"] == 2
    assert report["val_alpha_mean"] == 0.5
    nothing = fusion_policy.policy_report(torch.full((10,), float("nan")), torch.zeros(10).long(), inputs)
    assert nothing["alpha_histogram"] == [0] * NUM_ACTIONS and nothing["alpha_no_choice"] == 10
    assert np.isnan(nothing["val_alpha_mean"])


def test_a_diverged_agent_validates_to_no_alpha_and_a_nan_loss_and_says_its_q_values_are_not_finite(caplog):
    """DQNStage.policy took argmax over NaN Q-values: a diverged agent validated as α = 0 (the VGAE alone) with a
    finite loss, so training never stopped on it and its weights could be kept as the best epoch's."""
    inputs = fusion_inputs(40, seed=0)
    stage = stage_of(inputs, inputs, {})
    with torch.no_grad():
        for parameter in stage.model.parameters():
            parameter.fill_(float("nan"))
    with caplog.at_level("WARNING", logger="kdgat.training"):
        val = stage.validate()
    assert np.isnan(val["val_alpha"]) and np.isnan(val["val_loss"])  # the loop stops on a NaN validation loss
    assert "dqn: the agent's Q-values are not finite on 40 of 40 stop graphs" in caplog.text
