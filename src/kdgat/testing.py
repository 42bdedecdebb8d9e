"""Tiny random CAN graphs that follow the preprocess contract (kdgat.graph_store), for tests and benchmarks.

Normal graphs draw their nodes from a fixed pool of IDs with smooth payloads; an attack graph adds a flooding
node (ID 0, zero payload, high count) wired to many others, like a DoS window. Learnable, but not trivially so
for every model size when `attack_strength` is small.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

from kdgat.chain import EDGE_FEATURES


def toy_graph(rng: np.random.Generator, num_ids: int, attack: bool, attack_strength: float = 1.0) -> Data:
    num_nodes = int(rng.integers(6, 14))
    ids = rng.choice(np.arange(1, num_ids - 1), size=num_nodes, replace=False)
    payload = np.clip(ids[:, None] / num_ids + rng.normal(0, 0.05, (num_nodes, 8)), 0, 1)
    count = rng.uniform(0.1, 0.6, num_nodes)
    position = rng.uniform(0.5, 1.0, num_nodes)
    if attack:
        victim = int(rng.integers(num_nodes))
        ids[victim] = 0
        payload[victim] = rng.uniform(0, 1 - attack_strength, 8) * 0.2
        count[victim] = min(1.0, 0.5 + 0.5 * attack_strength)
    x = np.column_stack([ids, payload, count, position]).astype(np.float32)
    source = np.arange(num_nodes)
    target = np.roll(source, -1)
    if attack:
        extra = rng.choice(num_nodes, size=max(2, int(num_nodes * attack_strength * 0.6)), replace=False)
        source = np.concatenate([source, np.full(len(extra), int(np.flatnonzero(ids == 0)[0]))])
        target = np.concatenate([target, extra])
    edge_index = np.vstack([source, target]).astype(np.int64)
    # Drawn as when the graphs carried 11 edge features, so that the random stream, and so every toy graph after
    # this one, stays as it was; no model reads the edge feature.
    edge_attr = rng.uniform(0, 1, (edge_index.shape[1], 11))[:, :EDGE_FEATURES].astype(np.float32)
    return Data(
        x=torch.from_numpy(x),
        edge_index=torch.from_numpy(edge_index),
        edge_attr=torch.from_numpy(edge_attr),
        y=torch.tensor([int(attack)], dtype=torch.long),
    )


def toy_graphs(count: int, num_ids: int = 20, attack_share: float = 0.3, seed: int = 0, attack_strength=1.0):
    rng = np.random.default_rng(seed)
    attacks = rng.random(count) < attack_share
    return [toy_graph(rng, num_ids, bool(a), attack_strength) for a in attacks]


class TinyStage:
    """The smallest object the training loop (kdgat.training.loop.fit) trains: enough to make it write and read
    its resume checkpoint."""

    def __init__(self):
        self.model = torch.nn.Linear(2, 1)
        self.loader_generator = torch.Generator().manual_seed(0)

    def train_epoch(self, epoch):
        return {"graphs": 1}

    def validate(self):
        return {"val_loss": 1.0}

    def state_dict(self):
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
