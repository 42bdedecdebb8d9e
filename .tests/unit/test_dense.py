"""The single-window detector (dense layers) gives the same GAT layer outputs, DQN state and decisions as the
batched PyG path it replaces at batch size one."""

import math

import pytest
import torch
from torch import nn
from torch_geometric.nn import GATConv

from kdgat.inference import WindowDetector, fusion_inputs, score_graphs
from kdgat.models import GAT, LEARNT, NUM_ACTIONS, VGAE, QNetwork
from kdgat.models.dense import DenseGATLayer, DenseMLP, attention_mask
from kdgat.presets import resolve_preset
from kdgat.testing import toy_graphs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NUM_IDS = 20


def randomise_norm_statistics(model: nn.Module, seed: int) -> None:
    """Fresh batch norms have mean 0 / variance 1, which would hide a wrong fold of the statistics."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            size = module.num_features
            module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(size, generator=generator) - 0.5)


@pytest.mark.parametrize("heads", [1, 3])
def test_dense_layer_equals_gatconv_with_self_loops_repeats_and_isolated_nodes(heads):
    torch.manual_seed(heads)
    conv = GATConv(7, 5, heads=heads).eval()
    with torch.no_grad():
        conv.bias.uniform_(-1.0, 1.0)  # a fresh GATConv's bias is 0, which would hide a wrong fold of it
    norm = nn.BatchNorm1d(5 * heads).eval()
    randomise_norm_statistics(norm, heads)
    norm.running_var[0] = 0.0  # a channel constant over the training data: batch norm divides by √eps
    x = torch.randn(6, 7)
    # A self-loop (GATConv replaces it by its own), a repeated edge (4 → 1), node 5 receives only its self-loop.
    edge_index = torch.tensor([[0, 1, 2, 3, 3, 4, 4], [1, 2, 0, 3, 0, 1, 1]])
    mask = attention_mask(edge_index, 6)
    with torch.no_grad():
        assert torch.allclose(DenseGATLayer(conv)(x, mask), conv(x, edge_index), atol=1e-5)
        assert torch.allclose(DenseGATLayer(conv, norm)(x, mask), norm(conv(x, edge_index)), atol=1e-5)


@pytest.mark.parametrize(
    "conv",
    [
        GATConv(7, 5, heads=2, edge_dim=1),
        GATConv(7, 5, heads=2, concat=False),
        GATConv(7, 5, heads=2, residual=True),
        GATConv((7, 6), 5, heads=2),
    ],
    ids=["edge features", "averaged heads", "residual", "bipartite"],
)
def test_dense_layer_refuses_a_gatconv_it_would_not_equal(conv):
    with pytest.raises(ValueError, match="DenseGATLayer"):
        DenseGATLayer(conv)


@pytest.mark.parametrize(
    "settings, eps",
    [({"negative_slope": 0.9}, 1e-5), ({"bias": False}, 1e-5), ({}, 0.1)],
    ids=["leaky relu slope", "no bias", "batch norm eps"],
)
def test_dense_layer_equals_a_gatconv_and_batch_norm_built_with_other_than_the_defaults(settings, eps):
    # The layer takes every setting from the modules it is given, not PyG's or torch's defaults (slope 0.2, a
    # bias, eps 1e-5), which the shipped models happen to use.
    torch.manual_seed(5)
    conv = GATConv(7, 5, heads=2, **settings).eval()
    norm = nn.BatchNorm1d(10, eps=eps).eval()
    randomise_norm_statistics(norm, 5)
    norm.running_var[0] = 0.0  # where eps matters most
    x = torch.randn(6, 7)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 0, 0, 1, 2]])
    with torch.no_grad():
        dense = DenseGATLayer(conv, norm)(x, attention_mask(edge_index, 6))
        assert torch.allclose(dense, norm(conv(x, edge_index)), atol=1e-5)


def test_dense_mlp_refuses_a_module_it_does_not_evaluate_naming_it():
    # DenseMLP evaluates Linear / ReLU / LayerNorm / Dropout only: another module (an activation the head might
    # gain) would be skipped silently, the detector's decisions no longer those of the trained model.
    with pytest.raises(ValueError, match=r"^DenseMLP does not support Tanh$"):
        DenseMLP(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
    steps = DenseMLP(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(0.5))).steps
    assert [kind for kind, _ in steps] == ["linear", "relu"]


@pytest.mark.parametrize(
    "preset, fallback",
    [("demo_teacher", LEARNT), ("demo_student", LEARNT), ("student", LEARNT), ("student", 0)],
)
def test_window_detector_matches_the_batched_path(preset, fallback):
    torch.manual_seed(0)
    vgae = VGAE(NUM_IDS, **resolve_preset(preset, "vgae"))
    randomise_norm_statistics(vgae, 1)
    vgae.anomaly_threshold.fill_(0.3)
    vgae.error_mean.copy_(torch.tensor([0.1, 2.0, 0.3]))
    vgae.error_std.copy_(torch.tensor([0.05, 1.5, 0.2]))
    gat = GAT(NUM_IDS, **resolve_preset(preset, "gat"))
    dqn = QNetwork(**resolve_preset(preset, "dqn"))
    graphs = toy_graphs(40, num_ids=NUM_IDS, seed=3)
    dqn.state_mean.copy_(torch.rand(15))
    dqn.state_std.copy_(torch.rand(15) + 0.5)
    dqn.fallback_action.fill_(fallback)  # an agent that fell back to the VGAE: α = 0 on both paths
    detector = WindowDetector(vgae, gat, dqn)
    expected_states = fusion_inputs(vgae, gat, graphs)["state"]
    expected = score_graphs(vgae, gat, dqn, graphs)
    with torch.no_grad():
        for index, graph in enumerate(graphs):
            state = detector.state(graph.x, graph.edge_index)
            assert torch.allclose(state, expected_states[index], rtol=1e-4, atol=1e-5), index
            detection = detector(graph.x, graph.edge_index)
            assert detection.alpha == pytest.approx(expected["fusion_alpha"][index])
            assert detection.score == pytest.approx(expected["fusion_score"][index], abs=1e-5)
            assert detection.attack == bool(expected["fusion_pred"][index])
    if fallback != LEARNT:
        assert (expected["fusion_alpha"] == fallback / (NUM_ACTIONS - 1)).all()


def test_a_dqn_with_nan_weights_gives_nan_alpha_and_score_on_both_paths_not_action_zero():
    """Both paths took argmax over the NaN Q-values of a diverged agent: action 0, a finite α of 0 and the VGAE's
    decision, which the evaluation reported as the fusion's."""
    torch.manual_seed(0)
    vgae = VGAE(NUM_IDS, **resolve_preset("demo_student", "vgae"))
    vgae.anomaly_threshold.fill_(0.3)
    gat, dqn = GAT(NUM_IDS, **resolve_preset("demo_student", "gat")), QNetwork()
    with torch.no_grad():
        for parameter in dqn.parameters():
            parameter.fill_(float("nan"))
    graphs = toy_graphs(5, num_ids=NUM_IDS, seed=3)
    scored = score_graphs(vgae, gat, dqn, graphs)
    assert scored["fusion_alpha"].isna().all() and scored["fusion_score"].isna().all()
    assert scored["fusion_pred"].tolist() == [0] * 5
    assert scored[["vgae_score", "gat_prob"]].notna().all().all()  # the VGAE and the GAT are not at fault
    detection = WindowDetector(vgae, gat, dqn)(graphs[0].x, graphs[0].edge_index)
    assert math.isnan(detection.alpha) and math.isnan(detection.score) and detection.attack is False


def test_window_detector_copies_the_models_leaving_the_callers_in_their_mode_and_weights_unshared():
    """WindowDetector's docstring says it copies the weights; it set the caller's models to eval mode (and moved
    them to the CPU) in place, so a model still being trained went on without dropout."""
    vgae = VGAE(NUM_IDS, **resolve_preset("demo_student", "vgae"))
    vgae.anomaly_threshold.fill_(0.3)
    gat, dqn = GAT(NUM_IDS, **resolve_preset("demo_student", "gat")), QNetwork()
    graph = toy_graphs(1, num_ids=NUM_IDS, seed=3)[0]
    vgae.train(), gat.train(), dqn.train()
    detector = WindowDetector(vgae, gat, dqn)
    assert [vgae.training, gat.training, dqn.training] == [True, True, True]
    with torch.no_grad():
        before = detector(graph.x, graph.edge_index)
        for model in (vgae, gat, dqn):
            for parameter in model.parameters():
                parameter.add_(1.0)
        after = detector(graph.x, graph.edge_index)
    assert after == before


def test_window_detector_needs_a_calibrated_vgae():
    vgae = VGAE(NUM_IDS, **resolve_preset("demo_student", "vgae"))
    gat, dqn = GAT(NUM_IDS, **resolve_preset("demo_student", "gat")), QNetwork()
    with pytest.raises(RuntimeError, match="not calibrated"):
        WindowDetector(vgae, gat, dqn)
