"""Graph-level attack classifier: stacked multi-head GAT layers with jumping-knowledge concatenation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv, JumpingKnowledge, global_mean_pool

from kdgat.chain import EDGE_FEATURES
from kdgat.models.vgae import ID_COLUMN, NUM_NODE_FEATURES


def edge_inputs(edge_attr: torch.Tensor) -> torch.Tensor:
    """The window graphs' edge features are counts, intervals and degree products on very different scales (all
    >= 0, see kdgat.graphs); log1p brings them to a few units without statistics to store."""
    return torch.log1p(edge_attr.clamp_min(0))


class GAT(nn.Module):
    """Embedding(CAN ID) ‖ features → L × GATConv(heads, concat) → JK cat → mean pool → MLP → 2 logits.

    With ``edge_features`` the attention of every layer also sees the 11 edge features (GATConv ``edge_dim``).
    """

    def __init__(
        self,
        num_ids: int,
        embedding_dim: int = 8,
        hidden: int = 16,
        heads: int = 4,
        num_layers: int = 2,
        fc_hidden: int = 32,
        fc_layers: int = 2,
        dropout: float = 0.1,
        edge_features: bool = False,
    ):
        super().__init__()
        self.dropout = dropout
        self.edge_features = bool(edge_features)
        self.embedding = nn.Embedding(num_ids, embedding_dim)
        self.convs = nn.ModuleList()
        width = embedding_dim + NUM_NODE_FEATURES - 1
        edge_dim = EDGE_FEATURES if self.edge_features else None
        for _ in range(num_layers):
            self.convs.append(GATConv(width, hidden, heads=heads, concat=True, edge_dim=edge_dim))
            width = hidden * heads
        self.jump = JumpingKnowledge("cat")
        width = hidden * heads * num_layers
        head: list[nn.Module] = []
        for _ in range(fc_layers - 1):
            head += [nn.Linear(width, fc_hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = fc_hidden
        head.append(nn.Linear(width, 2))
        self.head = nn.Sequential(*head)

    def embed(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor,
        edge_attr: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pooled graph embedding (the input of the classification head)."""
        edges = None
        if self.edge_features:
            if edge_attr is None:
                raise ValueError("this GAT was built with edge_features=True: pass the graphs' edge_attr")
            edges = edge_inputs(edge_attr)
        h = torch.cat([self.embedding(x[:, ID_COLUMN].long()), x[:, 1:]], dim=1)
        layers = []
        for conv in self.convs:
            h = F.dropout(F.relu(conv(h, edge_index, edges)), p=self.dropout, training=self.training)
            layers.append(h)
        return global_mean_pool(self.jump(layers), batch)

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor,
        edge_attr: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.head(self.embed(x, edge_index, batch, edge_attr))
