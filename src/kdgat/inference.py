"""Rebuild trained models from model.pt and score graphs with the VGAE → GAT → DQN fusion chain.

`score_graphs` returns, per graph: label, vgae_error (raw mean node-feature reconstruction MSE), vgae_score (the
error calibrated to [0, 1): 0.5 at the VGAE's validation threshold, see VGAE.calibrated_anomaly), gat_prob
(p(attack)), fusion_alpha (α chosen by the DQN), fusion_score ((1−α)·vgae_score + α·gat_prob) and fusion_pred
(fusion_score > 0.5).
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch_geometric.loader import DataLoader

from kdgat.models import GAT, VGAE, QNetwork, fuse
from kdgat.runtime import select_device
from kdgat.training.artifacts import MODEL_FORMAT

__all__ = ["fusion_inputs", "load_model", "score_graphs", "select_device"]

_MODEL_CLASSES = {"vgae": VGAE, "gat": GAT, "dqn": QNetwork}


def load_model(path, device="cpu") -> torch.nn.Module:
    """The module saved by a kd_gat training stage, in eval mode on `device`."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not a kd_gat model file (expected format {MODEL_FORMAT!r})")
    kind = payload["kind"]
    if kind not in _MODEL_CLASSES:
        raise ValueError(f"{path}: unknown model kind {kind!r}; expected one of {sorted(_MODEL_CLASSES)}")
    config = dict(payload["config"])
    if kind == "vgae":
        config["hidden_dims"] = tuple(config["hidden_dims"])
    model = _MODEL_CLASSES[kind](**config)
    model.load_state_dict(payload["state_dict"])
    return model.to(select_device(device) if isinstance(device, str) else device).eval()


@torch.no_grad()
def fusion_inputs(
    vgae: VGAE, gat: GAT, graphs, batch_size: int = 256, device="cpu"
) -> dict[str, torch.Tensor]:
    """Per-graph quantities the fusion needs, on CPU: the 15-D DQN state and its ingredients.

    State = VGAE [feature MSE, neighbour BCE, ID CE, z mean, z std, z max, z min, calibrated anomaly]
          + GAT  [p(normal), p(attack), embedding mean, std, max, min, confidence 1 − H(p)/ln 2].
    """
    device = select_device(device) if isinstance(device, str) else device
    vgae_was_training, gat_was_training = vgae.training, gat.training
    vgae.eval().to(device)
    gat.eval().to(device)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("state", "anomaly", "p_attack", "error", "label")}
    for batch in DataLoader(list(graphs), batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        errors = vgae.graph_errors(batch.x, batch.edge_index, batch.batch, batch.num_graphs)
        anomaly = vgae.calibrated_anomaly(errors["feature_mse"])
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
        parts["error"].append(errors["feature_mse"].float().cpu())
        parts["label"].append(batch.y.view(-1).long().cpu())
    vgae.train(vgae_was_training)
    gat.train(gat_was_training)
    if not parts["state"]:
        raise ValueError("no graphs to score")
    return {k: torch.cat(v) for k, v in parts.items()}


@torch.no_grad()
def score_graphs(vgae, gat, dqn, graphs, batch_size: int = 256, device="cpu") -> pd.DataFrame:
    """One row per graph (in input order): label, vgae_error, vgae_score, gat_prob, fusion_alpha, fusion_score,
    fusion_pred."""
    device = select_device(device) if isinstance(device, str) else device
    inputs = fusion_inputs(vgae, gat, graphs, batch_size=batch_size, device=device)
    dqn_was_training = dqn.training
    dqn.eval().to(device)
    actions = dqn(inputs["state"].to(device)).argmax(dim=1).cpu()
    dqn.train(dqn_was_training)
    alpha, score, pred = fuse(actions, inputs["anomaly"], inputs["p_attack"])
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
