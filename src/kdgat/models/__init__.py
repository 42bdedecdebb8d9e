"""The three KD-GAT models: a graph VAE (anomaly score), a GAT classifier and a DQN fusion agent."""

from kdgat.models.dqn import LEARNT, NUM_ACTIONS, QNetwork, alphas, fuse, fusion_reward
from kdgat.models.gat import GAT
from kdgat.models.vgae import VGAE, neighbour_multi_hot

__all__ = [
    "GAT",
    "LEARNT",
    "NUM_ACTIONS",
    "QNetwork",
    "VGAE",
    "alphas",
    "fuse",
    "fusion_reward",
    "neighbour_multi_hot",
]


def count_parameters(model) -> int:
    """Trainable and frozen parameters alike (buffers such as batch-norm statistics are not parameters)."""
    return sum(p.numel() for p in model.parameters())
