"""Score graphs with the trained VGAE → GAT → DQN fusion chain (models from kdgat.model_store.load_model).

`score_graphs` returns, per graph: label, vgae_error (the VGAE's anomaly error: how far the graph's feature MSE,
ID cross-entropy and neighbour BCE lie from normal windows', see kdgat.models.vgae), vgae_score (that error calibrated to [0, 1): 0.5
at the VGAE's validation threshold, see VGAE.calibrated_anomaly), gat_prob
(p(attack)), fusion_alpha (α chosen by the DQN; NaN where its Q-values are not finite, a diverged agent, which
kdgat.evaluation refuses), fusion_score ((1−α)·vgae_score + α·gat_prob) and fusion_pred
(fusion_score > 0.5).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Iterator
from typing import NamedTuple

import pandas as pd
import torch
import torch.nn.functional as F
from torch_geometric.loader import DataLoader

from kdgat.files import FileContentError
from kdgat.models import GAT, LEARNT, VGAE, fuse
from kdgat.models.dense import DenseGATLayer, DenseMLP, attention_mask
from kdgat.models.vgae import ID_COLUMN
from kdgat.runtime import select_device

__all__ = ["Detection", "WindowDetector", "fusion_inputs", "score_graphs"]


def scoring_device(device) -> torch.device:
    """``device`` (a setting such as ``auto``, or a torch.device) as the tensors on it name it: plain ``cuda`` is
    the current GPU's index, so that a model already there is recognised (``cuda`` != ``cuda:0`` in torch)."""
    device = select_device(device) if isinstance(device, str) else torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


@contextlib.contextmanager
def evaluated(device: torch.device, *models: torch.nn.Module) -> Iterator[list[torch.nn.Module]]:
    """``models`` in eval mode on ``device`` for the block, the caller's models handed back as they came: a model
    already on ``device`` is used itself and each of its submodules gets its train/eval mode back however the
    block ends; a model elsewhere is scored as a copy on ``device`` (``.to()`` would move the caller's model: one on
    the CPU scored on CUDA stayed on the GPU). Give models on ``device`` to save that copy on every call."""
    modes = [(module, module.training) for model in models for module in model.modules()]
    used = [
        model
        if all(t.device == device for t in itertools.chain(model.parameters(), model.buffers()))
        else copy.deepcopy(model).to(device)
        for model in models
    ]
    try:
        yield [model.eval() for model in used]
    finally:
        for module, training in modes:
            module.training = training  # each submodule's own: train(mode) would set them all alike


@torch.no_grad()
def fusion_inputs(
    vgae: VGAE, gat: GAT, graphs, batch_size: int = 256, device="cpu", source: str | None = None
) -> dict[str, torch.Tensor]:
    """Per-graph quantities the fusion needs, on CPU: the 15-D DQN state and its ingredients. The models score in
    eval mode on ``device`` and are handed back unchanged (``evaluated``). Graphs the models cannot score (none, or
    of another vocabulary) are a FileContentError naming ``source``, the file they came from, when given.

    State = VGAE [feature MSE, neighbour BCE, ID CE, z mean, z std, z max, z min, calibrated anomaly error]
          + GAT  [p(normal), p(attack), embedding mean, std, max, min, confidence 1 − H(p)/ln 2].
    """
    device = scoring_device(device)
    graphs = list(graphs)
    if not graphs:
        raise FileContentError(
            f"{source}: no graphs to score" if source else "no graphs to score (the graphs argument is empty)"
        )
    check_vocabulary(graphs, vgae.num_ids, gat.embedding.num_embeddings, source)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("state", "anomaly", "p_attack", "error", "label")}
    with evaluated(device, vgae, gat) as (vgae, gat):
        for batch in DataLoader(graphs, batch_size=batch_size, shuffle=False):
            batch = batch.to(device)
            errors = vgae.graph_errors(batch.x, batch.edge_index, batch.batch, batch.num_graphs)
            anomaly = vgae.calibrated_anomaly(errors["anomaly_error"])
            embedding = gat.embed(batch.x, batch.edge_index, batch.batch)
            probs = torch.softmax(gat.head(embedding), dim=1)
            entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)
            state = torch.stack(
                [
                    errors["feature_mse"],
                    errors["neighbour_bce"],
                    errors["id_ce"],
                    errors["z_mean"],
                    errors["z_std"],
                    errors["z_max"],
                    errors["z_min"],
                    anomaly,
                    probs[:, 0],
                    probs[:, 1],
                    embedding.mean(dim=1),
                    embedding.std(dim=1, unbiased=False),
                    embedding.max(dim=1).values,
                    embedding.min(dim=1).values,
                    1.0 - entropy / math.log(2.0),
                ],
                dim=1,
            )
            parts["state"].append(state.float().cpu())
            parts["anomaly"].append(anomaly.float().cpu())
            parts["p_attack"].append(probs[:, 1].float().cpu())
            parts["error"].append(errors["anomaly_error"].float().cpu())
            parts["label"].append(batch.y.view(-1).long().cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def largest_id_index(graphs) -> int:
    """The largest CAN-ID index (node feature ID_COLUMN) of any node of ``graphs``; -1 when they hold no node."""
    return max((int(graph.x[:, ID_COLUMN].max()) for graph in graphs if graph.num_nodes), default=-1)


def check_vocabulary(graphs: list, vgae_ids: int, gat_ids: int, source: str | None = None) -> None:
    """A CAN-ID index the models have no embedding for (graphs of another preprocess run, or a negative one) fails
    naming it, and ``source`` (the graphs' file) when given, before any model is touched: torch's own IndexError
    names neither the index nor the vocabulary (and on CUDA a device-side assert ends the process). A
    FileContentError: the user's mistake, one line in a wrapper's log."""
    known = min(vgae_ids, gat_ids)
    smallest = min((int(graph.x[:, ID_COLUMN].min()) for graph in graphs if graph.num_nodes), default=0)
    if smallest < 0:
        raise FileContentError(
            (f"{source}: " if source else "")
            + f"a graph holds the negative CAN-ID index {smallest}: node feature {ID_COLUMN} is an index into the "
            f"CAN-ID vocabulary, 0 to {known - 1}; these are no graphs of the preprocess step"
        )
    largest = largest_id_index(graphs)
    if largest >= known:
        raise FileContentError(
            (f"{source}: " if source else "")
            + f"a graph holds CAN-ID index {largest}, outside the {known} CAN-ID indices of the VGAE ({vgae_ids}) and "
            f"GAT ({gat_ids}): the graphs are of another vocabulary than the models' (another dataset or preprocess "
            "run); score graphs of the preprocess run the models were trained on"
        )


@torch.no_grad()
def score_graphs(
    vgae, gat, dqn, graphs, batch_size: int = 256, device="cpu", source: str | None = None
) -> pd.DataFrame:
    """One row per graph (in input order): label, vgae_error, vgae_score, gat_prob, fusion_alpha, fusion_score,
    fusion_pred. The models score in eval mode on ``device`` and are handed back unchanged (``evaluated``); graphs
    they cannot score are refused as in :func:`fusion_inputs` (``source``: the graphs' file, named then)."""
    device = scoring_device(device)
    inputs = fusion_inputs(vgae, gat, graphs, batch_size=batch_size, device=device, source=source)
    with evaluated(device, dqn) as (dqn,):
        actions, chosen = (part.cpu() for part in dqn.decide(inputs["state"].to(device)))
    alpha, score, pred = fuse(actions, inputs["anomaly"], inputs["p_attack"], chosen)
    return pd.DataFrame(
        {
            "label": inputs["label"].numpy().astype(int),
            "vgae_error": inputs["error"].numpy(),
            "vgae_score": inputs["anomaly"].numpy(),
            "gat_prob": inputs["p_attack"].numpy(),
            "fusion_alpha": alpha.numpy(),
            "fusion_score": score.numpy(),
            "fusion_pred": pred.numpy().astype(int),
        }
    )


class Detection(NamedTuple):
    """The fused decision for one window: α chosen by the DQN, fused score, attack = fused score > 0.5."""

    alpha: float
    score: float
    attack: bool


class WindowDetector:
    """Detects one window graph at a time with trained VGAE, GAT and DQN models (eval mode), without batching.

    Same state, α and decision as :func:`score_graphs` (checked by .tests/unit/test_dense.py), computed with the
    dense single-graph layers of kdgat.models.dense: at batch size one PyG's batching and message passing cost
    more than the arithmetic. The models' weights are copied when the detector is built: build it after training.
    The caller's models are left as they are (their device, train or eval mode); the detector reads CPU copies.
    """

    def __init__(self, vgae: VGAE, gat: GAT, dqn):
        if torch.isnan(vgae.anomaly_threshold):
            raise RuntimeError("VGAE anomaly threshold is not calibrated (train it with kdgat.training.vgae)")
        # Copies: .eval() and .cpu() change a module in place (a model still training would be left in eval mode).
        vgae, gat, dqn = (copy.deepcopy(model).eval().cpu() for model in (vgae, gat, dqn))
        with torch.no_grad():
            self.num_ids = vgae.num_ids
            self.vgae_embedding = vgae.embedding.weight.detach().clone()
            self.encoder = [
                DenseGATLayer(c, n) for c, n in zip(vgae.encoder, vgae.encoder_norms, strict=True)
            ]
            self.mean_head = (vgae.mean_head.weight.detach().clone(), vgae.mean_head.bias.detach().clone())
            self.decoder = [
                DenseGATLayer(c, n) for c, n in zip(vgae.decoder, vgae.decoder_norms, strict=True)
            ]
            self.feature_out = DenseGATLayer(vgae.feature_out)
            self.id_classifier = (
                vgae.id_classifier.weight.detach().clone(),
                vgae.id_classifier.bias.detach().clone(),
            )
            self.neighbour_predictor = DenseMLP(vgae.neighbour_predictor)
            self.error_mean = vgae.error_mean.detach().clone()
            self.error_std = vgae.error_std.detach().clone()
            self.threshold = float(vgae.anomaly_threshold)
            self.gat_embedding = gat.embedding.weight.detach().clone()
            self.gat_layers = [DenseGATLayer(conv) for conv in gat.convs]
            self.gat_head = DenseMLP(gat.head)
            self.q_network = DenseMLP(dqn.net, dqn.state_mean.detach(), dqn.state_std.detach())
            self.fallback_action = int(dqn.fallback_action)

    def state(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """The 15-D DQN state of one window graph (kdgat.inference.fusion_inputs' layout)."""
        mask = attention_mask(edge_index, x.size(0))
        ids = x[:, ID_COLUMN].long()
        continuous = x[:, 1:]

        h = torch.cat([self.vgae_embedding[ids], continuous], dim=1)
        for layer in self.encoder:
            h = torch.relu(layer(h, mask))
        z = F.linear(h, *self.mean_head)  # eval mode: z = μ
        h = z
        for layer in self.decoder:
            h = torch.relu(layer(h, mask))
        features = torch.sigmoid(self.feature_out(h, mask))
        neighbours = torch.zeros(x.size(0), self.num_ids)
        source, target = edge_index
        neighbours[source, ids[target]] = 1.0
        neighbours[target, ids[source]] = 1.0
        errors = torch.stack(
            [
                F.mse_loss(features, continuous),
                F.cross_entropy(F.linear(z, *self.id_classifier), ids),
                F.binary_cross_entropy_with_logits(self.neighbour_predictor(z), neighbours),
            ]
        )
        error = ((errors - self.error_mean).abs() / self.error_std).sum()
        anomaly = 1.0 - torch.exp(-math.log(2.0) * error / max(self.threshold, 1e-12))

        h = torch.cat([self.gat_embedding[ids], continuous], dim=1)
        layers = []
        for layer in self.gat_layers:
            h = torch.relu(layer(h, mask))
            layers.append(h)
        embedding = torch.cat(layers, dim=1).mean(dim=0)
        probs = torch.softmax(self.gat_head(embedding), dim=0)
        confidence = 1.0 + (probs * probs.clamp_min(1e-12).log()).sum() / math.log(2.0)
        return torch.stack(
            [
                errors[0],
                errors[2],
                errors[1],
                z.mean(dim=1).mean(),
                z.std(dim=1, unbiased=False).mean(),
                z.max(),
                z.min(),
                anomaly,
                probs[0],
                probs[1],
                embedding.mean(),
                embedding.std(unbiased=False),
                embedding.max(),
                embedding.min(),
                confidence,
            ]
        )

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, edge_index: torch.Tensor) -> Detection:
        state = self.state(x, edge_index)
        if self.fallback_action != LEARNT:
            action, chosen = torch.tensor([self.fallback_action]), None
        else:
            q_values = self.q_network(state)
            action, chosen = q_values.argmax().view(1), torch.isfinite(q_values).all().view(1)
        alpha, score, prediction = fuse(action, state[7:8], state[9:10], chosen)  # the one decision rule
        return Detection(float(alpha), float(score), bool(prediction))
