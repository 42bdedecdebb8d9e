"""Dense single-graph evaluation of trained GAT layers, for detecting one window at a time.

A window graph has a few dozen nodes, so the attention of a ``GATConv`` fits in an N×N matrix: scores
a_dst[i] + a_src[j] for every edge j → i plus the self-loop GATConv adds (its own self-loops replaced), LeakyReLU,
softmax over each node's in-neighbours, then the weighted sum of the transformed features. A handful of tensor
operations instead of PyG's message passing, whose per-call overhead dominates at batch size one (~0.4 ms per
layer against ~0.05 ms here). Eval mode only: no dropout, batch norm folded into the layer as an affine map.

Equal to the PyG layers (checked against them by .tests/unit/test_dense.py), repeated edges included: an edge
listed k times enters the softmax k times, i.e. with log k added to its score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv


def attention_mask(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """[N, N] additive attention mask: log of how often node i receives from node j (edges j → i; exactly one
    self-loop per node, as GATConv replaces the graph's own), −inf where it does not."""
    counts = torch.zeros(num_nodes, num_nodes)
    counts.index_put_((edge_index[1], edge_index[0]), torch.ones(edge_index.size(1)), accumulate=True)
    return counts.fill_diagonal_(1.0).log()


class DenseGATLayer:
    """A trained ``GATConv`` (concat heads, no edge features), optionally followed by an eval-mode
    ``BatchNorm1d``, as one matrix product plus dense attention."""

    def __init__(self, conv: GATConv, norm: nn.BatchNorm1d | None = None):
        if conv.lin is None or conv.lin.bias is not None or conv.res is not None or not conv.concat:
            raise ValueError(
                "DenseGATLayer supports GATConv with a shared bias-free `lin`, concat=True, no residual"
            )
        if conv.lin_edge is not None:
            raise ValueError("DenseGATLayer does not take edge features")
        heads, channels = conv.heads, conv.out_channels
        with torch.no_grad():
            weight = conv.lin.weight.detach().clone()  # [H·C, D]
            per_head = weight.view(heads, channels, -1)
            to_source = (per_head * conv.att_src.detach().view(heads, channels, 1)).sum(dim=1)  # [H, D]
            to_target = (per_head * conv.att_dst.detach().view(heads, channels, 1)).sum(dim=1)
            bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(heads * channels)
            if norm is not None:
                # BN(y) = y·scale + shift per channel: scale the values (not the attention), fold into the bias.
                scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
                shift = norm.bias.detach() - norm.running_mean * scale
                weight = weight * scale[:, None]
                bias = bias * scale + shift
            # One product gives the values, then each head's source and target attention scores.
            self.weight_t = torch.cat([weight, to_source, to_target]).t().contiguous()
            self.bias = bias
        self.heads, self.channels = heads, channels
        self.negative_slope = float(conv.negative_slope)

    def __call__(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        heads, width = self.heads, self.heads * self.channels
        projected = h @ self.weight_t
        values = projected[:, :width]
        source, target = projected[:, width : width + heads], projected[:, width + heads :]
        if heads == 1:
            scores = F.leaky_relu(target + source.t(), self.negative_slope) + mask
            return torch.softmax(scores, dim=1) @ values + self.bias
        scores = target.t().unsqueeze(2) + source.t().unsqueeze(1)  # [H, N_target, N_source]
        weights = torch.softmax(F.leaky_relu(scores, self.negative_slope) + mask, dim=2)
        out = torch.bmm(weights, values.view(-1, heads, self.channels).transpose(0, 1))
        return out.transpose(0, 1).reshape(-1, width) + self.bias


class DenseMLP:
    """Eval-mode ``nn.Sequential`` of Linear / ReLU / LayerNorm / Dropout as plain functional calls; an affine
    input standardisation (x − mean) / std can be folded into the first Linear."""

    def __init__(self, sequential: nn.Sequential, input_mean=None, input_std=None):
        self.steps: list[tuple[str, tuple]] = []
        first = True
        with torch.no_grad():
            for module in sequential:
                if isinstance(module, nn.Linear):
                    weight, bias = module.weight.detach().clone(), module.bias.detach().clone()
                    if first and input_mean is not None:
                        weight = weight / input_std
                        bias = bias - weight @ input_mean
                    self.steps.append(("linear", (weight, bias)))
                    first = False
                elif isinstance(module, nn.LayerNorm):
                    self.steps.append(
                        ("layer_norm", (module.normalized_shape, module.weight, module.bias, module.eps))
                    )
                elif isinstance(module, nn.ReLU):
                    self.steps.append(("relu", ()))
                elif not isinstance(module, nn.Dropout):
                    raise ValueError(f"DenseMLP does not support {type(module).__name__}")

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        for kind, args in self.steps:
            if kind == "linear":
                h = F.linear(h, *args)
            elif kind == "relu":
                h = torch.relu(h)
            else:
                h = F.layer_norm(h, *args)
        return h
