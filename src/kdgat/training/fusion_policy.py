"""Which policy the trained fusion agent keeps, and what it learned: the learnt policy against the constant-α
policies (α = 0: the VGAE's decision, α = 1: the GAT's, between: a fixed weighing), judged on graphs no base model trained on
(:func:`fall_back_unless_better`), and a report of the policy on the stop graphs (:func:`policy_report`). Used by
:mod:`kdgat.training.dqn` after training."""

from __future__ import annotations

import numpy as np
import torch

from kdgat.chain import DECISION_THRESHOLD
from kdgat.models import LEARNT, NUM_ACTIONS, fuse
from kdgat.training.held_out import joined
from kdgat.training.loop import DIVERGENCE_FACTOR
from kdgat.training.stage import validation_metrics


def balanced_mean(values: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean of `values` over each class, averaged over the classes present (the episodes are balanced too)."""
    means = [values[labels == c].float().mean() for c in (0, 1) if bool((labels == c).any())]
    return float(torch.stack(means).mean())


def largest_return(rl) -> float:
    """The largest |return| an episode of ``rl`` (the kd_gat.dqn settings) can give from any step, so the largest
    |Q-value| a healthy agent estimates: a reward is +1 or minus a cost, discounted by γ over at most
    steps_per_episode steps (the episode ends there)."""
    reward = max(1.0, float(rl.miss_cost), float(rl.false_alarm_cost))
    gamma = float(rl.gamma)
    return reward * sum(gamma**k for k in range(int(rl.steps_per_episode)))


@torch.no_grad()
def q_value_divergence(model: torch.nn.Module, states: torch.Tensor, rl) -> str | None:
    """Why the agent diverged though finite, or None: its largest |Q-value| on ``states`` (the stop graphs) is more
    than DIVERGENCE_FACTOR times the largest return (:func:`largest_return`). Its validation loss (minus the
    balanced reward, at most a cost per graph) cannot tell: argmax picks actions from Q-values of any size."""
    if len(states) == 0:
        return None
    model.eval()
    largest, limit = float(model(states).abs().max()), largest_return(rl)
    if not largest <= DIVERGENCE_FACTOR * limit:
        return (
            f"the largest |Q-value| on the stop graphs is {largest:.4g}, more than {DIVERGENCE_FACTOR:g} times "
            f"the largest return an episode can give ({limit:.4g})"
        )
    return None


# The two policies that copy one input (α = 0: the VGAE's decision, α = 1: the GAT's), in the order a tie is broken.
INPUT_POLICIES = {"fixed_alpha_1": NUM_ACTIONS - 1, "fixed_alpha_0": 0}


def fixed_policy_name(action: int) -> str:
    return f"fixed_alpha_{action / (NUM_ACTIONS - 1):g}"


# Every constant α (one action for every graph): the inputs first, so that a tie keeps an input, then the others.
FIXED_POLICIES = INPUT_POLICIES | {fixed_policy_name(a): a for a in range(1, NUM_ACTIONS - 1)}


def fall_back_unless_better(stage, cross_fitted: torch.Tensor | None = None) -> dict:
    """Choose the policy of ``stage`` (a trained kdgat.training.dqn.DQNStage; not imported here, which would be a
    cycle) on graphs no base model trained on, in two steps, so that nothing is judged on the graphs it learnt
    from:

    1. the best constant α (no learning involved: the same action for every graph; α = 0 copies the VGAE's
       decision, α = 1 the GAT's, α between weighs their scores) by class-balanced reward on every fit and stop
       graph (a tie goes to the GAT, then to the VGAE): the stop graphs alone (~40 on the demo) are too few to
       tell them apart;
    2. the learnt policy is kept only if its class-balanced reward is above that constant's, judged on graphs it
       did not learn from: with ``cross_fitted`` (the learnt policy's reward on every fit and stop graph, each
       from a copy of the agent trained without it: kdgat.training.held_out.cross_fitted_rewards) on all fit + stop
       graphs, else on the stop graphs alone (the early-stopping criterion; it learnt from the fit graphs).
       Otherwise the agent's fallback action is set to that constant α for every graph.

    Why every constant α and not only the two inputs: a per-graph policy learnt from ~100 graphs has to beat the
    one-parameter family before its variance is worth paying; on the demo a constant mid α often beats both inputs
    and the learnt policy (docs/models.md has the numbers). Why cross-fitted: a policy that beat its rival on the
    41-49 stop graphs by chance was kept and then fell below it on test captures.

    metrics.json says which policy was kept (``policy``: ``learnt`` or ``fixed_alpha_<α>``), how
    (``policy_judged_on``: ``cross_fit`` or ``stop``), the best constant (``best_fixed``) and the better of the two
    inputs (``better_input``), the learnt policy's cross-fitted reward (``cross_fit_reward_learnt``), the stop
    rewards (``val_reward_*``, on ``stop_graphs`` graphs) and the rewards on fit + stop (``fit_stop_reward_*``, on
    ``fit_stop_graphs`` graphs) of the inputs and of the best constant."""
    fit, stop = stage.train_inputs, stage.val_inputs
    both = joined(fit, stop)

    def fixed_reward(name: str, inputs: dict) -> float:
        actions = torch.full_like(inputs["label"], FIXED_POLICIES[name])
        return balanced_mean(stage.reward(actions, inputs), inputs["label"])

    fit_stop = {name: fixed_reward(name, both) for name in FIXED_POLICIES}
    best_fixed = max(FIXED_POLICIES, key=lambda name: fit_stop[name])  # the first maximum
    best_input = max(INPUT_POLICIES, key=lambda name: fit_stop[name])
    reported = {**INPUT_POLICIES, best_fixed: None}  # the fixed policies whose rewards metrics.json records
    stage.model.fallback_action.fill_(LEARNT)
    on_stop = {"learnt": balanced_mean(stage.policy(stop)["reward"], stop["label"])}
    on_stop |= {name: fixed_reward(name, stop) for name in reported}
    extra = {}
    if cross_fitted is None:
        judged, learnt, rival = "stop", on_stop["learnt"], on_stop[best_fixed]
    else:
        if len(cross_fitted) != len(both["label"]):
            raise ValueError(
                f"cross-fitted rewards cover {len(cross_fitted)} graphs, the fit + stop graphs are "
                f"{len(both['label'])}"
            )
        learnt = balanced_mean(cross_fitted.to(both["label"].device), both["label"])
        judged, rival = "cross_fit", fit_stop[best_fixed]
        extra = {"cross_fit_reward_learnt": learnt}
    kept = "learnt" if learnt > rival else best_fixed
    if kept != "learnt":
        stage.model.fallback_action.fill_(FIXED_POLICIES[kept])
    return (
        {"policy": kept, "policy_judged_on": judged, "best_fixed": best_fixed, "better_input": best_input}
        | extra
        | {f"val_reward_{name}": value for name, value in on_stop.items()}
        | {f"fit_stop_reward_{name}": fit_stop[name] for name in reported}
        | {"fit_stop_reward_best_fixed": fit_stop[best_fixed], "fit_stop_graphs": len(both["label"])}
    )


def policy_report(alpha, prediction, inputs: dict, vgae_threshold: float = DECISION_THRESHOLD) -> dict:
    """What the policy learned, on the stop graphs: α histogram, agreement with each base model's own decision
    and the F1 of fixed α (0: VGAE alone, 0.5, 1: GAT alone) through the same fused-score rule. A graph where the
    agent chose nothing (α NaN: its Q-values are not finite, see QNetwork.decide) is counted in
    ``alpha_no_choice``, outside the histogram and the mean α (NaN when no graph has an α)."""
    labels = inputs["label"].cpu().numpy()
    prediction = prediction.cpu().numpy()
    gat_pred = (inputs["p_attack"] > DECISION_THRESHOLD).long().cpu().numpy()
    vgae_pred = (inputs["anomaly"] > vgae_threshold).long().cpu().numpy()
    alpha = alpha.cpu().numpy()
    chosen = alpha[np.isfinite(alpha)]
    report = {
        "val_alpha_mean": float(chosen.mean()) if len(chosen) else float("nan"),
        "alpha_histogram": np.bincount(
            (chosen * (NUM_ACTIONS - 1)).round().astype(int), minlength=NUM_ACTIONS
        ).tolist(),
        "alpha_no_choice": len(alpha) - len(chosen),
        "val_agrees_with_gat": float((prediction == gat_pred).mean()),
        "val_agrees_with_vgae": float((prediction == vgae_pred).mean()),
        "val_gat_f1": validation_metrics(labels, gat_pred)["val_f1"],
        "val_vgae_f1": validation_metrics(labels, vgae_pred)["val_f1"],
    }
    for action, name in ((0, "0"), (NUM_ACTIONS // 2, "0.5"), (NUM_ACTIONS - 1, "1")):
        actions = torch.full_like(inputs["label"], action)
        _, _, fixed = fuse(actions, inputs["anomaly"], inputs["p_attack"])
        report[f"val_f1_alpha_{name}"] = validation_metrics(labels, fixed.cpu().numpy())["val_f1"]
    return report
