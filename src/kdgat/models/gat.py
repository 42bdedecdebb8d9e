"""Graph-level attack classifier: stacked multi-head GAT layers with jumping-knowledge concatenation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv, JumpingKnowledge, global_mean_pool

from kdgat.models.vgae import ID_COLUMN, NUM_NODE_FEATURES


class GAT(nn.Module):
    """Embedding(CAN ID) ‖ features → L × GATConv(heads, concat) → JK cat → mean pool → MLP → 2 logits.

    The attention sees node features only: edge features through GATConv ``edge_dim`` gained nothing in an
    ablation (docs/models.md, "Edge features"), so the window graphs no longer carry them.
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
    ):
        super().__init__()
        self.dropout = dropout
        self.embedding = nn.Embedding(num_ids, embedding_dim)
        self.convs = nn.ModuleList()
        width = embedding_dim + NUM_NODE_FEATURES - 1
        for _ in range(num_layers):
            self.convs.append(GATConv(width, hidden, heads=heads, concat=True))
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
    ) -> torch.Tensor:
        """Pooled graph embedding (the input of the classification head)."""
        h = torch.cat([self.embedding(x[:, ID_COLUMN].long()), x[:, 1:]], dim=1)
        layers = []
        for conv in self.convs:
            h = F.dropout(F.relu(conv(h, edge_index)), p=self.dropout, training=self.training)
            layers.append(h)
        return global_mean_pool(self.jump(layers), batch)

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor,
    ) -> torch.Tensor:
        return self.head(self.embed(x, edge_index, batch))
