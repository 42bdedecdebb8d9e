"""Score graphs with the trained VGAE → GAT → DQN fusion chain (models from kdgat.model_store.load_model).

`score_graphs` returns, per graph: label, vgae_error (the VGAE's anomaly error: mean node feature MSE + weighted ID
cross-entropy + weighted neighbour BCE, see kdgat.models.vgae), vgae_score (that error calibrated to [0, 1): 0.5
at the VGAE's validation threshold, see VGAE.calibrated_anomaly), gat_prob
(p(attack)), fusion_alpha (α chosen by the DQN), fusion_score ((1−α)·vgae_score + α·gat_prob) and fusion_pred
(fusion_score > 0.5).
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch_geometric.loader import DataLoader

from kdgat.models import GAT, VGAE, fuse
from kdgat.runtime import select_device

__all__ = ["fusion_inputs", "score_graphs"]


@torch.no_grad()
def fusion_inputs(
    vgae: VGAE, gat: GAT, graphs, batch_size: int = 256, device="cpu"
) -> dict[str, torch.Tensor]:
    """Per-graph quantities the fusion needs, on CPU: the 15-D DQN state and its ingredients.

    State = VGAE [feature MSE, neighbour BCE, ID CE, z mean, z std, z max, z min, calibrated anomaly error]
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
        anomaly = vgae.calibrated_anomaly(errors["anomaly_error"])
        embedding = gat.embed(batch.x, batch.edge_index, batch.batch, batch.edge_attr)
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
