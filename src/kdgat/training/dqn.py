"""DQN fusion stage: learns, per graph, the weight α of the GAT's p(attack) against the VGAE's anomaly score.

What it learns from: base-model outputs on graphs those models never trained on. The stage reads one graph file,
``fit`` (the kd_gat module gives it <kd_gat.dqn.fit_split>.pt, by default val.pt, the time blocks of the training
captures held out from VGAE and GAT training), and early-stops either on a second file, ``stop``
(kd_gat.dqn.stop_split, e.g. val.pt when the fit split is a further held-out split such as fusion.pt), or on every
k-th of 20 contiguous blocks of the fit graphs (kd_gat.dqn.early_stop_share). On the base models' own training
graphs the GAT is nearly always right, and an agent trained there learns to copy it (review H1).

The fusion is a contextual bandit: the action does not change the next graph. So γ = 0 by default: the target of
Q(s, α) is the reward itself, and Q learns how often α decides right for states like s (bootstrapping on an
unrelated next graph only adds noise; γ > 0 is still possible and then uses double DQN with the online network's
argmax taken in eval mode). Reward: cost-sensitive correctness of fused score > 0.5, no confidence margin (see
kdgat.models.dqn.fusion_reward). Each episode is a stream of fit graphs, half normal and half attack (the agent
must not learn the class prior), pushed to a replay buffer; Huber loss, gradient clipping, a hard-synced target
network, ε decaying linearly from eps_start to eps_end over the episodes. Early stopping watches the class-balanced
mean reward of the greedy policy on the stop graphs. metrics.json records what the policy learned: the α
histogram, how often its decision equals the GAT's and the VGAE's, and fixed-α baselines on the stop graphs.

With a teacher (student_kd) the loss adds the regression of the student's Q-row on the teacher's Q-row, the teacher
seeing the states its own VGAE and GAT produce for the same graphs: α·MSE(Q_s, Q_t) + (1−α)·TD loss. Assumption:
the teacher's Q-row, which rates each α for the teacher's base models, also rates it for the student's. Where
the teacher's greedy α gives a different decision on the student's outputs than on its own, the assumption is
visibly wrong for that graph; with ``kd_gat.dqn.kd_weighting: agreement`` (default) those rows get no
distillation weight (``uniform``: every row counts).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from kdgat.distillation import freeze, q_value_kd_loss
from kdgat.files import FileContentError
from kdgat.graph_store import graph_header
from kdgat.inference import fusion_inputs
from kdgat.model_store import load_model
from kdgat.models import NUM_ACTIONS, QNetwork, fuse, fusion_reward
from kdgat.models.dqn import state_spread
from kdgat.runtime import seed_everything
from kdgat.tracking import TrackingSettings
from kdgat.training.data import (
    check_graphs,
    check_one_preprocess_run,
    load_graph_file,
    load_num_ids,
    refuse_stop_graphs_that_are_the_fit_graphs,
    refuse_training_graphs,
)
from kdgat.training.fusion_policy import (
    balanced_mean,
    fall_back_unless_better,
    policy_report,
    q_value_divergence,
)
from kdgat.training.held_out import cross_fitted_rewards, early_stop_rows, joined, split_inputs, take
from kdgat.training.loop import LoopSettings, fingerprint, fit, refuse_checkpoint_over_files
from kdgat.training.replay import ReplayBuffer
from kdgat.training.settings import (
    SettingsError,
    StageSettings,
    given_by_wrapper,
    setting_key,
    settings_named,
)
from kdgat.training.stage import (
    StageBase,
    base_metrics,
    check_teachers,
    frozen,
    locked_tracked_job,
    prepare_job,
    resolve_device,
    validation_metrics,
    write_outputs,
)

log = logging.getLogger("kdgat.training")

# Graphs per forward pass when the fusion inputs are computed (inference only: no effect on the result).
INFERENCE_BATCH_SIZE = 256


def double_dqn_targets(online, target, next_states, rewards, done, gamma: float) -> torch.Tensor:
    """r + γ·(1 − done)·Q_target(s', argmax_a Q_online(s', a)): the online net picks (in eval mode: no dropout
    noise in the choice), the target net values. With γ = 0 the target is the reward alone."""
    if gamma == 0:
        return rewards
    with torch.no_grad():
        was_training = online.training
        online.eval()
        next_actions = online(next_states).argmax(dim=1, keepdim=True)
        online.train(was_training)
        next_values = target(next_states).gather(1, next_actions).squeeze(1)
    return rewards + gamma * (1.0 - done) * next_values


def epsilon_at(episode: int, episodes: int, start: float, end: float) -> float:
    progress = episode / (episodes - 1) if episodes > 1 else 1.0
    return start + (end - start) * min(progress, 1.0)


def kd_row_weights(teacher_q, teacher_inputs: dict, student_inputs: dict, rows, mode: str) -> torch.Tensor:
    """Per-row weight of the Q-value distillation: 1 everywhere (``uniform``), or 1 where the teacher's greedy α
    decides the same on the student's base-model outputs as on its own (``agreement``), else 0."""
    if mode == "uniform":
        return torch.ones(len(rows), device=teacher_q.device)
    action = teacher_q.argmax(dim=1)
    _, _, on_teacher = fuse(action, teacher_inputs["anomaly"][rows], teacher_inputs["p_attack"][rows])
    _, _, on_student = fuse(action, student_inputs["anomaly"][rows], student_inputs["p_attack"][rows])
    return (on_teacher == on_student).float()


class DQNStage(StageBase):
    def __init__(
        self, model: QNetwork, train_inputs: dict, val_inputs: dict, settings, device, teacher_inputs=None
    ):
        super().__init__(model, settings, device)
        self.target = copy.deepcopy(self.model).eval()
        for parameter in self.target.parameters():
            parameter.requires_grad_(False)
        self.rl = settings.dqn
        self.episodes = int(self.training.epochs)
        self.train_inputs = {k: v.to(device) for k, v in train_inputs.items()}
        self.val_inputs = {k: v.to(device) for k, v in val_inputs.items()}
        self.teacher = None
        self.distillation = settings.distillation
        if teacher_inputs is not None:
            teacher, inputs = teacher_inputs
            self.teacher = frozen(teacher, device)
            self.teacher_inputs = {k: v.to(device) for k, v in inputs.items()}
            if len(self.teacher_inputs["state"]) != len(self.train_inputs["state"]):
                raise ValueError("the teacher's fusion inputs must cover the same graphs as the student's")
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

    def reward(self, actions, inputs: dict, rows=None) -> torch.Tensor:
        pick = (lambda v: v) if rows is None else (lambda v: v[rows])
        return fusion_reward(
            actions,
            pick(inputs["anomaly"]),
            pick(inputs["p_attack"]),
            pick(inputs["label"]),
            miss_cost=float(self.rl.miss_cost),
            false_alarm_cost=float(self.rl.false_alarm_cost),
        )

    def train_epoch(self, epoch: int) -> dict:
        data = self.train_inputs
        steps = int(self.rl.steps_per_episode)
        epsilon = epsilon_at(epoch, self.episodes, float(self.rl.eps_start), float(self.rl.eps_end))
        rows = self.episode_rows(steps)
        d_rows = rows.to(self.device)
        actions = self.act(data["state"][d_rows], epsilon)
        rewards = self.reward(actions.to(self.device), data, d_rows).cpu()
        next_rows = torch.roll(rows, -1)
        done = torch.zeros(steps)
        done[-1] = 1.0
        self.buffer.push(rows, actions, rewards, next_rows, done)

        self.model.train()
        batch_size = int(self.rl.batch_size)
        totals: dict[str, float] = {}
        updates = 0
        for _ in self.observers.batches(range(int(self.rl.updates_per_episode))):
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
                    teacher_q = self.teacher(self.teacher_inputs["state"][index])
                    weights = kd_row_weights(
                        teacher_q, self.teacher_inputs, data, index, str(self.rl.kd_weighting)
                    )
                parts = q_value_kd_loss(
                    q_all, teacher_q, td, alpha=float(self.distillation.alpha), weights=weights
                )
                parts["kd_weight"] = weights.mean()
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
        actions, chosen = self.model.decide(inputs["state"])
        alpha, score, prediction = fuse(actions, inputs["anomaly"], inputs["p_attack"], chosen)
        # NaN where the agent chose nothing, not α = 0's reward: a diverged agent's validation loss is NaN (fit stops)
        reward = self.reward(actions, inputs).masked_fill(~chosen, float("nan"))
        return {"alpha": alpha, "score": score, "prediction": prediction, "reward": reward, "chosen": chosen}

    def validate(self) -> dict:
        out = self.policy(self.val_inputs)
        if unchosen := int((~out["chosen"]).sum()):  # then the loop stops: "training diverged"
            log.warning(
                f"dqn: the agent's Q-values are not finite on {unchosen} of {len(out['chosen'])} stop graphs"
            )
        labels = self.val_inputs["label"].cpu().numpy()
        metrics = validation_metrics(labels, out["prediction"].cpu().numpy(), out["score"].cpu().numpy())
        reward = balanced_mean(out["reward"], self.val_inputs["label"])
        return {"val_loss": -reward, "val_reward": reward, "val_alpha": float(out["alpha"].mean())} | metrics

    def divergence(self) -> str | None:  # asked by kdgat.training.loop.fit of the best weights
        return q_value_divergence(self.model, self.val_inputs["state"], self.rl)


def standardise_states(model: QNetwork, states: torch.Tensor) -> None:
    model.state_mean.copy_(states.mean(dim=0))
    model.state_std.copy_(state_spread(states))


def fit_agent(
    train_inputs: dict,
    val_inputs: dict,
    settings: StageSettings,
    device,
    checkpoint=None,
    teacher: QNetwork | None = None,
    teacher_inputs: dict | None = None,
    callbacks: Sequence = (),
) -> tuple[DQNStage, dict]:
    """A fresh agent (seeded from ``settings``) trained on ``train_inputs`` and early-stopped on ``val_inputs``:
    (the stage, holding the best weights, and the training loop's result)."""
    seed_everything(int(settings.seed))
    model = QNetwork(**dict(settings.model))
    standardise_states(model, train_inputs["state"])
    stage = DQNStage(
        model,
        train_inputs,
        val_inputs,
        settings,
        device,
        (teacher, teacher_inputs) if teacher is not None else None,
    )
    loop = LoopSettings(
        epochs=int(settings.training.epochs),
        patience=int(settings.training.patience),
        checkpoint=checkpoint,
        name=f"dqn[{settings.variant}]",
        callbacks=callbacks,
        divergence_fix=f"lower kd_gat.training.dqn.lr ({float(settings.training.lr):g})",
        loss_diverges=False,  # minus a reward: the Q-values tell (divergence())
    )
    # Resume only on the same fusion inputs and teacher.
    inputs = {"train": train_inputs, "val": val_inputs, "teacher": teacher, "teacher_inputs": teacher_inputs}
    return stage, fit(stage, loop, fingerprint(settings.as_dict(), **inputs))


def train(
    train_inputs: dict,
    val_inputs: dict,
    settings: StageSettings | Mapping,
    checkpoint=None,
    teacher: QNetwork | None = None,
    teacher_inputs: dict | None = None,
    callbacks: Sequence = (),
    teacher_val_inputs: dict | None = None,
    device: torch.device | None = None,
):
    """Train the fusion agent on precomputed fusion inputs (kdgat.inference.fusion_inputs): ``train_inputs`` are
    learnt from, ``val_inputs`` decide early stopping; with ``teacher`` (student_kd), ``teacher_inputs`` are the
    teacher's own fusion inputs for the same graphs as ``train_inputs`` (and ``teacher_val_inputs`` for those of
    ``val_inputs``, needed when ``kd_gat.dqn.keep_folds`` > 0). Then the policy is chosen
    (kdgat.training.fusion_policy.fall_back_unless_better): with ``keep_folds``, on rewards cross-fitted over the
    fit and stop graphs (kdgat.training.held_out.cross_fitted_rewards: each judged by a copy of the agent trained
    without it, the same settings, early-stopping on blocks of its own training folds). ``device``: the one
    ``run`` resolved (and logged) for the job; None resolves it from the settings."""
    started = time.perf_counter()
    settings = StageSettings.from_dict(settings)
    if (teacher is None) != (teacher_inputs is None):
        raise ValueError("DQN distillation needs both the teacher agent and its fusion inputs")
    folds = int(settings.dqn.keep_folds)
    if teacher is not None and folds and teacher_val_inputs is None:
        raise ValueError(
            f"cross-fitting a distilled agent ({setting_key('kd_gat.dqn.keep_folds', 'dqn.keep_folds')}) needs the "
            "teacher's stop inputs"
        )
    device = resolve_device(settings) if device is None else device
    # The agent first (its checkpoint makes a killed job resume), then the copies (seconds; redone on resume).
    stage, result = fit_agent(
        train_inputs, val_inputs, settings, device, checkpoint, teacher, teacher_inputs, callbacks
    )
    learnt_rewards = None
    if folds:
        pooled = joined(stage.train_inputs, stage.val_inputs)  # on the agent's device
        teacher_pooled = None if teacher is None else joined(teacher_inputs, teacher_val_inputs)

        def train_copy(learn: torch.Tensor, stop: torch.Tensor):
            teacher_rows = None if teacher_pooled is None else take(teacher_pooled, learn)
            copy, _ = fit_agent(
                take(pooled, learn), take(pooled, stop), settings, device, None, teacher, teacher_rows
            )
            return lambda rows: copy.policy(take(pooled, rows.to(device)))["reward"]

        learnt_rewards = cross_fitted_rewards(
            len(pooled["label"]), folds, float(settings.dqn.early_stop_share), train_copy
        )
    model = stage.model
    kept = fall_back_unless_better(stage, learnt_rewards)
    out = stage.policy(stage.val_inputs)
    labels = stage.val_inputs["label"].cpu().numpy()
    metrics = base_metrics(settings, model, result, started, device)
    metrics |= validation_metrics(labels, out["prediction"].cpu().numpy(), out["score"].cpu().numpy())
    metrics |= {
        "val_reward": balanced_mean(out["reward"], stage.val_inputs["label"]),
        "fit_graphs": len(train_inputs["label"]),
        "stop_graphs": len(val_inputs["label"]),
    }
    metrics |= kept | policy_report(out["alpha"], out["prediction"], stage.val_inputs)
    judged = (
        f"out of {folds} folds of {kept['fit_stop_graphs']} fit + stop graphs: learnt "
        f"{kept['cross_fit_reward_learnt']:.4f}"
        if folds
        else f"on {len(val_inputs['label'])} stop graphs: learnt {kept['val_reward_learnt']:.4f}, "
        f"{kept['best_fixed']} {kept['val_reward_' + kept['best_fixed']]:.4f}"
    )
    log.info(
        "dqn: balanced reward on %d fit + stop graphs: GAT alone %.4f, VGAE alone %.4f, best constant %s %.4f; "
        "%s: policy %s",
        kept["fit_stop_graphs"],
        kept["fit_stop_reward_fixed_alpha_1"],
        kept["fit_stop_reward_fixed_alpha_0"],
        kept["best_fixed"],
        kept["fit_stop_reward_best_fixed"],
        judged,
        kept["policy"],
    )
    log.info(
        "dqn: stop F1 %.4f (GAT %.4f, VGAE %.4f), mean α %.3f, same decision as the GAT on %.1f%%",
        metrics["val_f1"],
        metrics["val_gat_f1"],
        metrics["val_vgae_f1"],
        metrics["val_alpha_mean"],
        100 * metrics["val_agrees_with_gat"],
    )
    return model.cpu(), result, metrics, dict(settings.model)


_train = train  # run() has a keyword argument named `train` (the train.pt file)


def check_graph_counts(settings: StageSettings, fit, fit_count: int, stop, stop_graphs) -> None:
    """Refuse, naming the files, before any model scores them: fit graphs too few to hold early-stopping blocks
    out of (no stop file), or fit + stop graphs too few for kd_gat.dqn.keep_folds folds of at least 2 graphs."""
    if stop_graphs is None and fit_count < 2:
        raise FileContentError(
            f"{fit}: {fit_count} graph: the DQN stops early on blocks held out of its fit graphs (no stop graphs "
            f"given, {'input.stop' if given_by_wrapper() else 'kd_gat.dqn.stop_split'}) and needs at least 2"
        )
    folds, pooled = int(settings.dqn.keep_folds), fit_count + len(stop_graphs or ())
    if folds and pooled < 2 * folds:
        given = f"{fit} and {stop} hold" if stop_graphs is not None else f"{fit} holds"
        raise SettingsError(
            f"{setting_key('kd_gat.dqn.keep_folds', 'dqn.keep_folds')}: {folds} folds of the fit + stop graphs need "
            f"at least {2 * folds} graphs; "
            f"{given} {pooled}: lower keep_folds (0: no cross-fitting) or give more graphs"
        )


@settings_named
def run(
    *,
    fit: str | os.PathLike,
    metadata: str | os.PathLike,
    settings: StageSettings | Mapping,
    outputs: Mapping[str, str | os.PathLike],
    vgae: str | os.PathLike,
    gat: str | os.PathLike,
    stop: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    teacher_dqn: str | os.PathLike | None = None,
    teacher_vgae: str | os.PathLike | None = None,
    teacher_gat: str | os.PathLike | None = None,
    threads: int | None = None,
    tracking: TrackingSettings | Mapping | None = None,
    callbacks: Sequence = (),
) -> dict:
    """File-level entry point (the train_dqn wrapper). ``fit``: the graph file the agent learns from, graphs the
    base models did not train on (the module gives val.pt); ``stop``: a graph file for early stopping (default:
    blocks held out of ``fit``, see ``early_stop_rows``). ``vgae``/``gat``: the same variant's model.pt files whose
    outputs the agent fuses; ``teacher_*``: the teacher's three model.pt files (student_kd, all or none)."""
    settings = prepare_job(settings, "dqn", outputs, threads)
    teachers = {"teacher_dqn": teacher_dqn, "teacher_vgae": teacher_vgae, "teacher_gat": teacher_gat}
    check_teachers(settings, teachers)
    refuse_checkpoint_over_files(checkpoint, {"fit": fit, "stop": stop, "metadata": metadata, "vgae": vgae,
                                              "gat": gat, **teachers, **outputs})  # fmt: skip
    with locked_tracked_job(outputs, checkpoint, tracking, settings.as_dict()) as tracker:
        num_ids = load_num_ids(metadata)
        base_models = {"vgae": vgae, "gat": gat, "teacher_vgae": teacher_vgae, "teacher_gat": teacher_gat}
        # Models and graphs of different preprocess runs: other vocabularies under the same ID indices.
        # fit's header is read once, for this check and for the vocabulary model.pt records
        headers = {"fit": graph_header(fit)} if os.path.isfile(fit) else {}
        check_one_preprocess_run(
            {"fit": fit, "stop": stop}, {**base_models, "teacher_dqn": teacher_dqn}, metadata, headers=headers
        )
        refuse_training_graphs({"fit": fit, "stop": stop}, base_models)
        refuse_stop_graphs_that_are_the_fit_graphs(fit, stop)
        fit_graphs = load_graph_file(fit, "fit")
        check_graphs(fit_graphs, num_ids, str(fit))
        stop_graphs = load_graph_file(stop, "stop") if stop else None
        if stop_graphs is not None:
            check_graphs(stop_graphs, num_ids, str(stop))
        device = resolve_device(settings)

        def inputs_of(vgae: str | os.PathLike, gat: str | os.PathLike) -> tuple[dict, dict]:
            # Loaded on the job's device: fusion_inputs would score a copy of a model that is elsewhere.
            models = load_model(vgae, device, kind="vgae"), load_model(gat, device, kind="gat")
            check_graph_counts(settings, fit, len(fit_graphs), stop, stop_graphs)  # before any scoring
            fit_inputs = fusion_inputs(*models, fit_graphs, INFERENCE_BATCH_SIZE, device, source=str(fit))
            if stop_graphs is not None:
                stop_inputs = fusion_inputs(
                    *models, stop_graphs, INFERENCE_BATCH_SIZE, device, source=str(stop)
                )
                return fit_inputs, stop_inputs
            held = early_stop_rows(len(fit_graphs), float(settings.dqn.early_stop_share))
            return split_inputs(fit_inputs, held)

        train_inputs, val_inputs = inputs_of(vgae, gat)
        teacher, teacher_inputs, teacher_val_inputs = None, None, None
        if teacher_dqn:
            teacher = freeze(load_model(teacher_dqn, device, kind="dqn"))  # as the stage uses it
            teacher_inputs, teacher_val_inputs = inputs_of(teacher_vgae, teacher_gat)
        model, result, metrics, model_config = _train(
            train_inputs,
            val_inputs,
            settings,
            checkpoint,
            teacher,
            teacher_inputs,
            callbacks=(*callbacks, tracker),
            teacher_val_inputs=teacher_val_inputs,
            device=device,  # logged once, above
        )
        recorded = {"vocabulary": headers["fit"]["vocabulary"]}  # the run whose graphs it learnt from
        write_outputs(outputs, settings, model, model_config, result, metrics, **recorded)
        tracker.log_outputs(metrics, outputs)
    return metrics
