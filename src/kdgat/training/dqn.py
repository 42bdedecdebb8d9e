"""DQN fusion stage: learns, per graph, the weight α of the GAT's p(attack) against the VGAE's anomaly score.

The fusion is a contextual decision (the action does not change the next graph), so an "episode" is a stream of
training graphs, half normal and half attack (the agent must not learn the class prior), with transitions
(graph_t, α_t, reward_t, graph_{t+1}). Double DQN with a replay buffer, a hard-synced target network, Huber loss,
gradient clipping and ε decaying linearly from eps_start to eps_end over the episodes. γ is kept small (default
0.2) because the next state is independent of the action. The prediction is fused score > 0.5 in the reward, in
validation and in kdgat.inference alike. Early stopping watches −(mean validation reward) of the greedy policy.
With a teacher (student_kd) the loss adds the regression of the student's Q-row on the teacher's Q-row, the teacher
seeing the states its own VGAE and GAT produce for the same graphs: α·MSE(Q_s, Q_t) + (1−α)·TD loss.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from kdgat.chain import DECISION_THRESHOLD
from kdgat.distillation import freeze, q_value_kd_loss
from kdgat.inference import fusion_inputs
from kdgat.model_store import load_model
from kdgat.models import NUM_ACTIONS, QNetwork, fuse, fusion_reward
from kdgat.runtime import seed_everything
from kdgat.training.data import load_graph_file, load_num_ids
from kdgat.training.loop import LoopSettings, fingerprint, fit
from kdgat.training.settings import StageSettings
from kdgat.training.stage import (
    StageBase,
    base_metrics,
    prepare_job,
    resolve_device,
    validation_metrics,
    write_outputs,
)

log = logging.getLogger("kdgat.training")

# Graphs per forward pass when the fusion inputs are computed (inference only: no effect on the result).
INFERENCE_BATCH_SIZE = 256


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


def double_dqn_targets(online, target, next_states, rewards, done, gamma: float) -> torch.Tensor:
    """r + γ·(1 − done)·Q_target(s', argmax_a Q_online(s', a)): the online net picks, the target net values."""
    with torch.no_grad():
        next_actions = online(next_states).argmax(dim=1, keepdim=True)
        next_values = target(next_states).gather(1, next_actions).squeeze(1)
    return rewards + gamma * (1.0 - done) * next_values


def epsilon_at(episode: int, episodes: int, start: float, end: float) -> float:
    progress = episode / (episodes - 1) if episodes > 1 else 1.0
    return start + (end - start) * min(progress, 1.0)


class DQNStage(StageBase):
    def __init__(self, model: QNetwork, train_inputs: dict, val_inputs: dict, settings, device, teacher=None):
        super().__init__(model, settings, device)
        self.target = copy.deepcopy(self.model).eval()
        for parameter in self.target.parameters():
            parameter.requires_grad_(False)
        self.rl = settings.dqn
        self.episodes = int(self.training.epochs)
        self.train_inputs = {k: v.to(device) for k, v in train_inputs.items()}
        self.val_inputs = {k: v.to(device) for k, v in val_inputs.items()}
        self.teacher = freeze(teacher.to(device)) if teacher is not None else None
        self.distillation = settings.distillation
        if self.teacher is not None and "teacher_state" not in self.train_inputs:
            raise ValueError("DQN distillation needs the teacher's states (teacher VGAE and GAT)")
        self.buffer = ReplayBuffer(int(self.rl.buffer_size))
        self.updates = 0
        labels = self.train_inputs["label"].cpu()
        self.attack_rows = torch.nonzero(labels == 1).view(-1)
        self.normal_rows = torch.nonzero(labels == 0).view(-1)

    def extra_state(self):
        return {
            "target": self.target.state_dict(),
            "buffer": self.buffer.state_dict(),
            "updates": self.updates,
        }

    def load_extra_state(self, state):
        self.target.load_state_dict(state["target"])
        self.buffer.load_state_dict(state["buffer"])
        self.updates = state["updates"]

    def episode_rows(self, steps: int) -> torch.Tensor:
        """A balanced stream of training graphs (random order)."""
        generator = self.loader_generator
        if len(self.attack_rows) == 0 or len(self.normal_rows) == 0:
            pool = torch.arange(len(self.train_inputs["label"]))
            return pool[torch.randint(0, len(pool), (steps,), generator=generator)]
        half = steps // 2
        rows = torch.cat(
            [
                self.attack_rows[torch.randint(0, len(self.attack_rows), (half,), generator=generator)],
                self.normal_rows[
                    torch.randint(0, len(self.normal_rows), (steps - half,), generator=generator)
                ],
            ]
        )
        return rows[torch.randperm(steps, generator=generator)]

    def act(self, states: torch.Tensor, epsilon: float) -> torch.Tensor:
        self.model.eval()
        with torch.no_grad():
            greedy = self.model(states).argmax(dim=1).cpu()
        explore = torch.rand(len(greedy), generator=self.loader_generator) < epsilon
        random_actions = torch.randint(0, NUM_ACTIONS, (len(greedy),), generator=self.loader_generator)
        return torch.where(explore, random_actions, greedy)

    def train_epoch(self, epoch: int) -> dict:
        data = self.train_inputs
        steps = int(self.rl.steps_per_episode)
        epsilon = epsilon_at(epoch, self.episodes, float(self.rl.eps_start), float(self.rl.eps_end))
        rows = self.episode_rows(steps)
        actions = self.act(data["state"][rows.to(self.device)], epsilon)
        d_rows = rows.to(self.device)
        rewards = fusion_reward(
            actions.to(self.device), data["anomaly"][d_rows], data["p_attack"][d_rows], data["label"][d_rows]
        ).cpu()
        next_rows = torch.roll(rows, -1)
        done = torch.zeros(steps)
        done[-1] = 1.0
        self.buffer.push(rows, actions, rewards, next_rows, done)

        self.model.train()
        batch_size = int(self.rl.batch_size)
        totals: dict[str, float] = {}
        updates = 0
        for _ in range(int(self.rl.updates_per_episode)):
            if self.buffer.size < batch_size:
                break
            index, action, reward, next_index, finished = (
                t.to(self.device) for t in self.buffer.sample(batch_size, self.loader_generator)
            )
            q_all = self.model(data["state"][index])
            q_taken = q_all.gather(1, action.view(-1, 1)).squeeze(1)
            targets = double_dqn_targets(
                self.model, self.target, data["state"][next_index], reward, finished, float(self.rl.gamma)
            )
            td = F.smooth_l1_loss(q_taken, targets)
            parts = {"loss": td}
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_q = self.teacher(data["teacher_state"][index])
                parts = q_value_kd_loss(q_all, teacher_q, td, alpha=float(self.distillation.alpha))
            self.step(parts["loss"])
            self.updates += 1
            updates += 1
            if self.updates % int(self.rl.target_update) == 0:
                self.target.load_state_dict(self.model.state_dict())
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach())
        metrics = {f"train_{name}": value / max(updates, 1) for name, value in totals.items()}
        metrics |= {"epsilon": epsilon, "train_reward": float(rewards.mean())}
        return metrics | {"graphs": steps}

    @torch.no_grad()
    def policy(self, inputs: dict) -> dict:
        self.model.eval()
        actions = self.model(inputs["state"]).argmax(dim=1)
        alpha, score, prediction = fuse(actions, inputs["anomaly"], inputs["p_attack"])
        reward = fusion_reward(actions, inputs["anomaly"], inputs["p_attack"], inputs["label"])
        return {"alpha": alpha, "score": score, "prediction": prediction, "reward": reward}

    def validate(self) -> dict:
        out = self.policy(self.val_inputs)
        labels = self.val_inputs["label"].cpu().numpy()
        metrics = validation_metrics(labels, out["prediction"].cpu().numpy(), out["score"].cpu().numpy())
        mean_reward = float(out["reward"].mean())
        return {
            "val_loss": -mean_reward,
            "val_reward": mean_reward,
            "val_alpha": float(out["alpha"].mean()),
        } | metrics


def standardise_states(model: QNetwork, states: torch.Tensor) -> None:
    model.state_mean.copy_(states.mean(dim=0))
    model.state_std.copy_(states.std(dim=0, unbiased=False).clamp_min(1e-6))


def train(
    train_inputs: dict,
    val_inputs: dict,
    settings: StageSettings | Mapping,
    checkpoint=None,
    teacher: QNetwork | None = None,
):
    """Train the fusion agent on precomputed fusion inputs (kdgat.inference.fusion_inputs)."""
    started = time.perf_counter()
    settings = StageSettings.from_dict(settings)
    seed_everything(int(settings.seed))
    device = resolve_device(settings)
    model_config = dict(settings.model)
    model = QNetwork(**model_config)
    standardise_states(model, train_inputs["state"])
    stage = DQNStage(model, train_inputs, val_inputs, settings, device, teacher)
    loop = LoopSettings(
        epochs=int(settings.training.epochs),
        patience=int(settings.training.patience),
        checkpoint=checkpoint,
        name=f"dqn[{settings.variant}]",
    )
    fp_inputs = {
        k: float(v.double().sum()) for k, v in train_inputs.items()
    }  # resume only on the same inputs
    result = fit(stage, loop, fingerprint({**settings.as_dict(), "inputs": fp_inputs}))
    out = stage.policy(stage.val_inputs)
    labels = stage.val_inputs["label"].cpu().numpy()
    metrics = base_metrics(settings, model, result, started, device)
    metrics |= validation_metrics(labels, out["prediction"].cpu().numpy(), out["score"].cpu().numpy())
    gat_pred = (stage.val_inputs["p_attack"] > DECISION_THRESHOLD).long().cpu().numpy()
    metrics |= {
        "val_reward": float(out["reward"].mean()),
        "val_alpha_mean": float(out["alpha"].mean()),
        "val_gat_f1": validation_metrics(labels, gat_pred)["val_f1"],
        "alpha_histogram": np.bincount(
            (out["alpha"].cpu().numpy() * (NUM_ACTIONS - 1)).round().astype(int), minlength=NUM_ACTIONS
        ).tolist(),
    }
    return model.cpu(), result, metrics, model_config


_train = train  # run() has a keyword argument named `train` (the train.pt file)


def run(
    *,
    train: str | os.PathLike,
    val: str | os.PathLike,
    metadata: str | os.PathLike,
    settings: StageSettings | Mapping,
    outputs: Mapping[str, str | os.PathLike],
    vgae: str | os.PathLike,
    gat: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    teacher_dqn: str | os.PathLike | None = None,
    teacher_vgae: str | os.PathLike | None = None,
    teacher_gat: str | os.PathLike | None = None,
    threads: int | None = None,
) -> dict:
    """File-level entry point (the train_dqn wrapper). ``vgae``/``gat``: the same variant's model.pt files whose
    outputs the agent fuses; ``teacher_*``: the teacher's three model.pt files (student_kd, all or none)."""
    settings = prepare_job(settings, "dqn", outputs, threads)
    teachers = {"teacher_dqn": teacher_dqn, "teacher_vgae": teacher_vgae, "teacher_gat": teacher_gat}
    if any(teachers.values()) and not all(teachers.values()):
        missing = [name for name, path in teachers.items() if not path]
        raise ValueError(f"DQN distillation needs all three teacher models; missing {missing}")
    load_num_ids(metadata)  # validates the metadata early
    train_graphs, val_graphs = load_graph_file(train), load_graph_file(val)
    device = resolve_device(settings)
    vgae_model, gat_model = load_model(vgae), load_model(gat)
    train_inputs = fusion_inputs(vgae_model, gat_model, train_graphs, INFERENCE_BATCH_SIZE, device)
    val_inputs = fusion_inputs(vgae_model, gat_model, val_graphs, INFERENCE_BATCH_SIZE, device)
    teacher = None
    if teacher_dqn:
        teacher = load_model(teacher_dqn)
        train_inputs["teacher_state"] = fusion_inputs(
            load_model(teacher_vgae), load_model(teacher_gat), train_graphs, INFERENCE_BATCH_SIZE, device
        )["state"]
    model, result, metrics, model_config = _train(train_inputs, val_inputs, settings, checkpoint, teacher)
    write_outputs(outputs, settings, model, model_config, result, metrics, checkpoint)
    return metrics
