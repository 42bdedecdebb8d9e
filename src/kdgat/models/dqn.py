"""DQN fusion agent: picks the weight α of the GAT probability against the VGAE anomaly score."""

from __future__ import annotations

import torch
from torch import nn

from kdgat.chain import DECISION_THRESHOLD

NUM_ACTIONS = 21
STATE_DIM = 15  # 8 VGAE features + 7 GAT features, see kdgat.inference.fusion_inputs
LEARNT = -1  # QNetwork.fallback_action when the agent's own greedy choice is used


def alphas(device=None) -> torch.Tensor:
    """Action i means α = i / 20: 0 trusts the VGAE alone, 1 the GAT alone."""
    return torch.linspace(0.0, 1.0, NUM_ACTIONS, device=device)


def fuse(
    actions: torch.Tensor, anomaly: torch.Tensor, p_attack: torch.Tensor, chosen: torch.Tensor | None = None
):
    """(α, fused score, prediction) for action indices; the prediction is always fused score > 0.5. ``chosen``
    (booleans per action, :meth:`QNetwork.decide`'s): where False the agent chose nothing (its Q-values are not
    finite), so α and the fused score are NaN (and the prediction normal) instead of a made-up action's."""
    alpha = alphas(anomaly.device)[actions]
    if chosen is not None:
        alpha = alpha.masked_fill(~chosen, float("nan"))
    score = (1.0 - alpha) * anomaly + alpha * p_attack
    return alpha, score, (score > DECISION_THRESHOLD).long()


# A state column whose spread over the fit states is below this share of max(|mean|, 1) is constant (a constant's
# float32 rounding, ~1e-8): it keeps std 1, so it standardises to 0 and a later deviation is not scaled up (by 1e6
# with the floor of 1e-6 before 2026-12-07). Any column varying more keeps its own std, as before.
CONSTANT_SPREAD = 1e-6


def state_spread(states: torch.Tensor) -> torch.Tensor:
    """The standard deviation of each state column ([N, STATE_DIM] → [STATE_DIM]), 1 for a constant column."""
    std = states.std(dim=0, unbiased=False)
    constant = std < CONSTANT_SPREAD * states.mean(dim=0).abs().clamp_min(1.0)
    return torch.where(constant, torch.ones_like(std), std)


class QNetwork(nn.Module):
    """num_layers × (Linear, LayerNorm, ReLU, Dropout) then a linear layer with one Q-value per action."""

    def __init__(
        self, state_dim: int = STATE_DIM, hidden: int = 64, num_layers: int = 2, dropout: float = 0.2
    ):
        super().__init__()
        # The state mixes reconstruction errors (~1e-3) with probabilities (~1): standardise with statistics of the
        # training states, stored as buffers so that model.pt carries them (set by kdgat.training.dqn).
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))
        # LEARNT, or the one action (a constant α) used for every graph when the learnt policy's reward,
        # cross-fitted over the fit + stop graphs (on the stop graphs alone with keep_folds 0), did not beat
        # that of the best constant α (set by kdgat.training.fusion_policy.fall_back_unless_better; model.pt
        # carries the choice).
        self.register_buffer("fallback_action", torch.tensor(LEARNT))
        layers: list[nn.Module] = []
        width = state_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, NUM_ACTIONS))
        self.net = nn.Sequential(*layers)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net((state - self.state_mean) / self.state_std)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A model.pt from before the fallback existed holds a learnt policy.
        state_dict.setdefault(f"{prefix}fallback_action", torch.tensor(LEARNT))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def choose(self, state: torch.Tensor) -> torch.Tensor:
        """The action of each state ([N, STATE_DIM] → [N]): the greedy one, or the fallback action when one is set."""
        return self.decide(state)[0]

    def decide(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(:meth:`choose`'s actions, whether each is a choice): False where the state's Q-values are not all finite
        (a diverged agent), whose argmax is no choice (all NaN: action 0, α = 0, silently). For :func:`fuse`."""
        fallback = int(self.fallback_action)
        if fallback != LEARNT:
            actions = torch.full(state.shape[:-1], fallback, dtype=torch.long, device=state.device)
            return actions, torch.ones_like(actions, dtype=torch.bool)
        q_values = self(state)
        return q_values.argmax(dim=-1), torch.isfinite(q_values).all(dim=-1)


def fusion_reward(
    actions, anomaly, p_attack, labels, miss_cost: float = 1.0, false_alarm_cost: float = 1.0
) -> torch.Tensor:
    """Cost-sensitive correctness of the fused prediction: +1 when right, −miss_cost for a missed attack,
    −false_alarm_cost for a false alarm. Nothing else.

    No margin term: a bonus for the fused score's distance from 0.5 is linear in α, so it always pays most for
    the more saturated input (a GAT's softmax) even where that input carries no information. Here every α on the
    right side of the decision earns the same, and Q(s, α) learns how often α decides correctly for states like s.
    """
    _, _, prediction = fuse(actions, anomaly, p_attack)
    labels = labels.long()
    correct = prediction == labels
    cost = torch.where(labels == 1, float(miss_cost), float(false_alarm_cost))
    return torch.where(correct, torch.ones_like(cost), -cost)
