"""Variational graph autoencoder over CAN-ID graphs: its reconstruction error is the anomaly score.

The layout is the original KD-GAT ``GraphAutoencoderNeighborhood`` (same parameter count for the same arguments,
see kdgat.presets): GAT encoder layers of widths ``hidden_dims`` (multi-head in the first one only), linear heads
to (μ, log σ²), a decoder that mirrors the encoder (GAT layers of widths ``reversed(hidden_dims)[:-1]``, then a
GAT layer to the node features), and two heads on z that predict the node's own CAN ID and its neighbours' IDs.

Anomaly error of a graph: how far each of its three reconstruction terms (the mean over its nodes of feature MSE,
CAN-ID cross-entropy and neighbour-ID BCE) lies from that term's distribution on held-out normal windows, in units
of its standard deviation, summed: Σ_t |e_t − μ_t| / σ_t (buffers ``error_mean``, ``error_std``, set by
kdgat.training.vgae from the normal validation graphs). Two-sided on purpose: a window the VGAE reconstructs
better than normal traffic is as foreign as one it reconstructs worse (fuzzing's random payloads average to
mid-range byte means, which a decoder fitted to normal traffic reproduces easily: feature MSE alone scored such
windows as more normal than normal, ROC-AUC 0.00). The ID and neighbour terms flag an ID the VGAE never saw in
normal traffic (the out-of-vocabulary index) or a node talking to unusual neighbours, which feature MSE misses.
Standardised, the three terms count alike although their raw scales differ by orders of magnitude.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv
from torch_geometric.utils import scatter

from kdgat.chain import NODE_FEATURES as NUM_NODE_FEATURES

# Node feature layout (see kdgat.graphs): column 0 is the CAN-ID index, the rest are continuous in [0, 1].
ID_COLUMN = 0
# Per-node reconstruction terms in the order of `error_weights`.
ERROR_TERMS = ("feature_mse", "id_ce", "neighbour_bce")


def neighbour_multi_hot(edge_index: torch.Tensor, can_ids: torch.Tensor, num_ids: int) -> torch.Tensor:
    """[N, num_ids] with a 1 for every CAN ID adjacent to the node (either edge direction)."""
    target = torch.zeros(can_ids.numel(), num_ids, device=can_ids.device)
    source, dest = edge_index
    target[source, can_ids[dest]] = 1.0
    target[dest, can_ids[source]] = 1.0
    return target


def standardised_error(errors, mean, std):
    """Σ over ERROR_TERMS of |errors[t] − mean[t]| / std[t] (torch or numpy per-graph errors alike)."""
    return sum(abs(errors[name] - mean[i]) / std[i] for i, name in enumerate(ERROR_TERMS))


# The least spread a term's standard deviation stands for, relative to its mean: 100 times float32's resolution of
# the errors (6e-8), and ~100 times below the least relative spread of any term in healthy runs (8.5e-4, the
# neighbour BCE); ABSOLUTE_STD_FLOOR where the mean is 0 too (errors of exactly 0). See docs/models.md.
RELATIVE_STD_FLOOR = 1e-5
ABSOLUTE_STD_FLOOR = 1e-8


def error_statistics(errors) -> tuple[list[float], list[float]]:
    """(mean, standard deviation) of each of ERROR_TERMS over the graphs in `errors`; 1 for one graph. The deviation
    is at least RELATIVE_STD_FLOOR × |mean| (and ABSOLUTE_STD_FLOOR): identical normal windows (std 0) would else
    scale any difference, float rounding included, into a huge z-score."""
    mean, std = [], []
    for name in ERROR_TERMS:
        values = torch.as_tensor(errors[name], dtype=torch.float64).reshape(-1)
        centre, spread = float(values.mean()), float(values.std(unbiased=False))
        mean.append(centre)
        floor = max(RELATIVE_STD_FLOOR * abs(centre), ABSOLUTE_STD_FLOOR)
        std.append(max(spread, floor) if values.numel() > 1 else 1.0)
    return mean, std


def _heads_for(width: int, heads: int, where: str) -> int:
    if width % heads:
        raise ValueError(f"VGAE {where} width {width} is not divisible by heads={heads}")
    return heads


class VGAE(nn.Module):
    """GAT encoder → (μ, log σ²) → z; decoders reconstruct node features, the node's ID and its neighbours' IDs."""

    def __init__(
        self,
        num_ids: int,
        embedding_dim: int = 8,
        hidden_dims: Sequence[int] = (64, 32),
        latent_dim: int = 16,
        heads: int = 1,
        dropout: float = 0.1,
        logvar_clamp: float = 10.0,
    ):
        super().__init__()
        if not hidden_dims:
            raise ValueError("VGAE hidden_dims needs at least one encoder width")
        self.num_ids = num_ids
        self.latent_dim = latent_dim
        self.logvar_clamp = logvar_clamp
        self.dropout = dropout
        num_continuous = NUM_NODE_FEATURES - 1
        self.embedding = nn.Embedding(num_ids, embedding_dim)

        self.encoder = nn.ModuleList()
        self.encoder_norms = nn.ModuleList()
        width = embedding_dim + num_continuous
        for index, hidden in enumerate(hidden_dims):
            layer_heads = _heads_for(hidden, heads, "hidden_dims entry") if index == 0 else 1
            self.encoder.append(GATConv(width, hidden // layer_heads, heads=layer_heads))
            self.encoder_norms.append(nn.BatchNorm1d(hidden))
            width = hidden
        self.mean_head = nn.Linear(width, latent_dim)
        self.logvar_head = nn.Linear(width, latent_dim)

        # Mirror of the encoder: its widths in reverse without the first, then the layer to the node features.
        self.decoder = nn.ModuleList()
        self.decoder_norms = nn.ModuleList()
        width = latent_dim
        for hidden in list(reversed(hidden_dims))[:-1]:
            layer_heads = _heads_for(hidden, heads, "decoder")
            self.decoder.append(GATConv(width, hidden // layer_heads, heads=layer_heads))
            self.decoder_norms.append(nn.BatchNorm1d(hidden))
            width = hidden
        self.feature_out = GATConv(width, num_continuous)
        self.id_classifier = nn.Linear(latent_dim, num_ids)
        self.neighbour_predictor = nn.Sequential(
            nn.Linear(latent_dim, latent_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(latent_dim, latent_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(latent_dim, num_ids),
        )
        # Normal windows' mean and standard deviation of each of ERROR_TERMS (see anomaly_error) and the threshold
        # of the anomaly error (see calibrated_anomaly): fitted on validation data after training.
        self.register_buffer("error_mean", torch.zeros(len(ERROR_TERMS)))
        self.register_buffer("error_std", torch.ones(len(ERROR_TERMS)))
        self.register_buffer("anomaly_threshold", torch.tensor(float("nan")))

    def _block(self, conv, norm, h, edge_index):
        h = F.relu(norm(conv(h, edge_index)))
        return F.dropout(h, p=self.dropout, training=self.training)

    def encode(self, x: torch.Tensor, edge_index: torch.Tensor):
        can_ids = x[:, ID_COLUMN].long()
        h = torch.cat([self.embedding(can_ids), x[:, 1:]], dim=1)
        for conv, norm in zip(self.encoder, self.encoder_norms, strict=True):
            h = self._block(conv, norm, h, edge_index)
        mean = self.mean_head(h)
        logvar = self.logvar_head(h).clamp(-self.logvar_clamp, self.logvar_clamp)
        return mean, logvar

    def reparameterize(self, mean, logvar):
        if not self.training:
            return mean
        return mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor, edge_index: torch.Tensor):
        h = z
        for conv, norm in zip(self.decoder, self.decoder_norms, strict=True):
            h = self._block(conv, norm, h, edge_index)
        features = torch.sigmoid(self.feature_out(h, edge_index))
        return features, self.id_classifier(z), self.neighbour_predictor(z)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, logvar = self.encode(x, edge_index)
        z = self.reparameterize(mean, logvar)
        features, id_logits, neighbour_logits = self.decode(z, edge_index)
        return {
            "z": z,
            "mean": mean,
            "logvar": logvar,
            "features": features,
            "id_logits": id_logits,
            "neighbour_logits": neighbour_logits,
        }

    def node_errors(self, out: dict, x: torch.Tensor, edge_index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-node reconstruction terms (feature MSE, ID cross-entropy, neighbour BCE)."""
        can_ids = x[:, ID_COLUMN].long()
        neighbours = neighbour_multi_hot(edge_index, can_ids, self.num_ids)
        return {
            "feature_mse": (out["features"] - x[:, 1:]).pow(2).mean(dim=1),
            "id_ce": F.cross_entropy(out["id_logits"], can_ids, reduction="none"),
            "neighbour_bce": F.binary_cross_entropy_with_logits(
                out["neighbour_logits"], neighbours, reduction="none"
            ).mean(dim=1),
        }

    def anomaly_error(self, errors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ over ERROR_TERMS of |error − normal mean| / normal standard deviation (per-graph errors)."""
        return standardised_error(errors, self.error_mean, self.error_std)

    def fit_error_statistics(self, normal_errors) -> None:
        """Set ``error_mean``/``error_std`` from per-graph errors of normal windows the model did not train on."""
        mean, std = error_statistics(normal_errors)
        self.error_mean.copy_(torch.tensor(mean))
        self.error_std.copy_(torch.tensor(std))

    def graph_errors(self, x, edge_index, batch, num_graphs: int | None = None) -> dict[str, torch.Tensor]:
        """Per-graph mean of each reconstruction term, the anomaly error (``anomaly_error``) and latent statistics
        (deterministic in eval mode)."""
        out = self(x, edge_index)
        errors = self.node_errors(out, x, edge_index)
        size = num_graphs if num_graphs is not None else int(batch.max()) + 1
        per_graph = {
            name: scatter(value, batch, dim=0, dim_size=size, reduce="mean") for name, value in errors.items()
        }
        per_graph["anomaly_error"] = self.anomaly_error(per_graph)
        z = out["z"]
        per_graph["z_mean"] = scatter(z.mean(dim=1), batch, dim=0, dim_size=size, reduce="mean")
        per_graph["z_std"] = scatter(z.std(dim=1, unbiased=False), batch, dim=0, dim_size=size, reduce="mean")
        per_graph["z_max"] = scatter(z.max(dim=1).values, batch, dim=0, dim_size=size, reduce="max")
        per_graph["z_min"] = scatter(z.min(dim=1).values, batch, dim=0, dim_size=size, reduce="min")
        return per_graph

    def calibrated_anomaly(self, error: torch.Tensor) -> torch.Tensor:
        """Map the anomaly error to [0, 1) so that the validation threshold lands exactly on 0.5.

        anomaly = 1 − exp(−ln 2 · error / threshold): monotone in the error, 0.5 at the threshold and
        saturating towards 1, which makes it commensurable with the GAT's p(attack) in the fused score.
        """
        threshold = self.anomaly_threshold
        if torch.isnan(threshold):
            raise RuntimeError("VGAE anomaly threshold is not calibrated (train it with kdgat.training.vgae)")
        return 1.0 - torch.exp(-math.log(2.0) * error / threshold.clamp_min(1e-12))


def vgae_loss(
    model: VGAE,
    out: dict,
    x: torch.Tensor,
    edge_index: torch.Tensor,
    id_weight: float = 0.1,
    neighbour_weight: float = 0.05,
    kl_weight: float = 0.01,
) -> dict[str, torch.Tensor]:
    """Feature MSE + id_weight·ID CE + neighbour_weight·neighbour BCE + kl_weight·KL, averaged over nodes."""
    errors = model.node_errors(out, x, edge_index)
    kl = kl_divergence(out["mean"], out["logvar"])
    parts = {name: value.mean() for name, value in errors.items()}
    parts["kl"] = kl
    parts["loss"] = (
        parts["feature_mse"]
        + id_weight * parts["id_ce"]
        + neighbour_weight * parts["neighbour_bce"]
        + kl_weight * kl
    )
    return parts


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) averaged over nodes and latent dimensions."""
    return -0.5 * torch.mean(1 + logvar - mean.pow(2) - logvar.exp())
