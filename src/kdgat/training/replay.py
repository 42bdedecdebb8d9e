"""The DQN stage's replay buffer: a ring of transitions kept as graph indices into a precomputed table of fusion
states (kdgat.training.dqn), whose whole state a resume checkpoint holds."""

from __future__ import annotations

import torch


class ReplayBuffer:
    """Ring buffer of transitions stored as graph indices (states are looked up from a precomputed table)."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.index = torch.zeros(self.capacity, dtype=torch.long)
        self.action = torch.zeros(self.capacity, dtype=torch.long)
        self.reward = torch.zeros(self.capacity)
        self.next_index = torch.zeros(self.capacity, dtype=torch.long)
        self.done = torch.zeros(self.capacity)
        self.size = 0
        self.position = 0

    def push(self, index, action, reward, next_index, done) -> None:
        for start in range(0, len(index), self.capacity):
            chunk = slice(start, start + self.capacity)
            count = len(index[chunk])
            slots = (self.position + torch.arange(count)) % self.capacity
            self.index[slots] = index[chunk]
            self.action[slots] = action[chunk]
            self.reward[slots] = reward[chunk]
            self.next_index[slots] = next_index[chunk]
            self.done[slots] = done[chunk]
            self.position = int((self.position + count) % self.capacity)
            self.size = min(self.size + count, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator):
        picks = torch.randint(0, self.size, (batch_size,), generator=generator)
        return (
            self.index[picks],
            self.action[picks],
            self.reward[picks],
            self.next_index[picks],
            self.done[picks],
        )

    def state_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("index", "action", "reward", "next_index", "done", "size", "position")
        }

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
