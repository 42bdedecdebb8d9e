"""Shapes of the three models, their losses on hand-checkable tensors and the size presets' parameter counts."""

import math

import pytest
import torch
from torch_geometric.data import Batch

from kdgat import presets
from kdgat.models import GAT, VGAE, QNetwork, count_parameters, neighbour_multi_hot
from kdgat.models.vgae import error_statistics, kl_divergence, vgae_loss
from kdgat.presets import PRESETS, REFERENCE_NUM_IDS, resolve_preset
from kdgat.testing import toy_graphs

# The original KD-GAT pipeline's counts (reports/data/model_sizes.json of DQN-Fusion 9d270b4), which its code gives
# at a vocabulary of 30 CAN IDs (kdgat.presets.REFERENCE_NUM_IDS).
ORIGINAL = {
    "teacher": {"vgae": 185_850, "gat": 311_138, "dqn": 689_493},
    "student": {"vgae": 9_186, "gat": 49_202, "dqn": 32_341},
}
BUILD = {
    "vgae": lambda cfg, num_ids=REFERENCE_NUM_IDS: VGAE(num_ids, **cfg),
    "gat": lambda cfg, num_ids=REFERENCE_NUM_IDS: GAT(num_ids, **cfg),
    "dqn": lambda cfg, num_ids=REFERENCE_NUM_IDS: QNetwork(**cfg),
}


@pytest.mark.parametrize("preset", ["teacher", "student"])
@pytest.mark.parametrize("stage", ["vgae", "gat", "dqn"])
def test_preset_parameter_counts_equal_the_original_at_its_vocabulary(preset, stage):
    assert REFERENCE_NUM_IDS == 30
    count = count_parameters(BUILD[stage](resolve_preset(preset, stage)))
    assert count == ORIGINAL[preset][stage]
    # The table in kdgat.presets' docstring states the same numbers.
    row = next(line for line in presets.__doc__.splitlines() if line.startswith(f"| {preset} "))
    assert f"{count:,}" in row.split("|")[2 + ("vgae", "gat", "dqn").index(stage)]


def test_vocabulary_dependent_parts_grow_with_the_vocabulary():
    """Embedding rows and the VGAE's ID/neighbour heads are the only vocabulary-sized parts (the review compared
    counts at 53 IDs with the original's at 30: 23 more IDs add exactly these parameters)."""
    extra = 23
    for preset in ("teacher", "student"):
        vgae, gat = resolve_preset(preset, "vgae"), resolve_preset(preset, "gat")
        latent, embedding = vgae["latent_dim"], vgae["embedding_dim"]
        vgae_growth = extra * (
            embedding + 2 * (latent + 1)
        )  # embedding + ID classifier + neighbour output layer
        assert count_parameters(BUILD["vgae"](vgae, 30 + extra)) - ORIGINAL[preset]["vgae"] == vgae_growth
        assert (
            count_parameters(BUILD["gat"](gat, 30 + extra)) - ORIGINAL[preset]["gat"]
            == extra * gat["embedding_dim"]
        )


def test_student_presets_are_much_smaller_and_demo_presets_exist():
    for stage in ("vgae", "gat", "dqn"):
        teacher = count_parameters(BUILD[stage](resolve_preset("teacher", stage)))
        student = count_parameters(BUILD[stage](resolve_preset("student", stage)))
        assert student < teacher / 5
    assert {"demo_teacher", "demo_student"} <= set(PRESETS)


def test_unknown_preset_names_the_config_key():
    with pytest.raises(KeyError, match="kd_gat"):
        resolve_preset("huge", "gat")


def test_forward_shapes():
    graphs = toy_graphs(5, num_ids=20, seed=0)
    batch = Batch.from_data_list(graphs)
    vgae = VGAE(20, embedding_dim=4, hidden_dims=(16, 8), latent_dim=6, heads=2)
    out = vgae(batch.x, batch.edge_index)
    n = batch.num_nodes
    assert out["features"].shape == (n, 10)
    assert out["id_logits"].shape == (n, 20)
    assert out["neighbour_logits"].shape == (n, 20)
    assert out["mean"].shape == out["logvar"].shape == (n, 6)
    assert float(out["logvar"].detach().abs().max()) <= vgae.logvar_clamp
    per_graph = vgae.graph_errors(batch.x, batch.edge_index, batch.batch, 5)
    assert all(v.shape == (5,) for v in per_graph.values())

    gat = GAT(20, embedding_dim=4, hidden=8, heads=2, num_layers=3, fc_hidden=16, fc_layers=2)
    assert gat(batch.x, batch.edge_index, batch.batch).shape == (5, 2)
    assert gat.embed(batch.x, batch.edge_index, batch.batch).shape == (5, 8 * 2 * 3)
    assert QNetwork(hidden=32)(torch.zeros(7, 15)).shape == (7, 21)


def test_neighbour_multi_hot_marks_both_directions():
    can_ids = torch.tensor([3, 1, 4])
    edge_index = torch.tensor([[0], [2]])  # node 0 (ID 3) → node 2 (ID 4)
    target = neighbour_multi_hot(edge_index, can_ids, num_ids=5)
    assert target.tolist() == [[0, 0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0]]


def test_kl_divergence_by_hand():
    assert float(kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3))) == 0.0
    # μ = 1, log σ² = 0: KL per dimension = ½·μ² = 0.5
    assert float(kl_divergence(torch.ones(1, 4), torch.zeros(1, 4))) == pytest.approx(0.5)


def test_vgae_loss_combines_the_terms_with_their_weights():
    vgae = VGAE(4, embedding_dim=2, hidden_dims=(4,), latent_dim=2)
    x = torch.tensor([[1.0] + [0.5] * 10, [2.0] + [0.0] * 10])
    edge_index = torch.tensor([[0], [1]])
    out = {
        "features": torch.full((2, 10), 0.5),  # node 0 exact, node 1 off by 0.5 everywhere → MSE 0.125
        "id_logits": torch.zeros(2, 4),  # uniform → CE = ln 4
        "neighbour_logits": torch.zeros(2, 4),  # p = 0.5 everywhere → BCE = ln 2
        "mean": torch.ones(2, 2),
        "logvar": torch.zeros(2, 2),  # KL = 0.5
    }
    parts = vgae_loss(vgae, out, x, edge_index, id_weight=0.1, neighbour_weight=0.05, kl_weight=0.01)
    assert float(parts["feature_mse"]) == pytest.approx(0.125)
    assert float(parts["id_ce"]) == pytest.approx(math.log(4))
    assert float(parts["neighbour_bce"]) == pytest.approx(math.log(2))
    expected = 0.125 + 0.1 * math.log(4) + 0.05 * math.log(2) + 0.01 * 0.5
    assert float(parts["loss"]) == pytest.approx(expected)


def test_calibrated_anomaly_is_one_half_at_the_threshold_and_monotone():
    vgae = VGAE(4, embedding_dim=2, hidden_dims=(4,), latent_dim=2)
    with pytest.raises(RuntimeError, match="not calibrated"):
        vgae.calibrated_anomaly(torch.tensor([0.1]))
    vgae.anomaly_threshold.fill_(0.2)
    scores = vgae.calibrated_anomaly(torch.tensor([0.0, 0.1, 0.2, 0.4, 10.0]))
    assert scores[0] == 0 and scores[2] == pytest.approx(0.5) and scores[3] == pytest.approx(0.75)
    assert torch.all(scores[1:] > scores[:-1]) and scores[-1] <= 1


def test_anomaly_error_is_two_sided_in_units_of_each_terms_normal_spread():
    """A window reconstructed better than normal traffic is as foreign as one reconstructed worse."""
    vgae = VGAE(4, embedding_dim=2, hidden_dims=(4,), latent_dim=2)
    vgae.fit_error_statistics(
        {"feature_mse": [0.01, 0.03], "id_ce": [1.0, 3.0], "neighbour_bce": [0.1, 0.3]}
    )  # means 0.02, 2, 0.2; spreads 0.01, 1, 0.1
    assert vgae.error_mean.tolist() == pytest.approx([0.02, 2.0, 0.2])
    assert vgae.error_std.tolist() == pytest.approx([0.01, 1.0, 0.1])
    # Each term moves its own windows, so dropping any one of the three changes the result.
    errors = {
        "feature_mse": torch.tensor([0.04, 0.00, 0.02, 0.02, 0.03]),
        "id_ce": torch.tensor([2.0, 2.0, 5.0, 2.0, 1.0]),
        "neighbour_bce": torch.tensor([0.2, 0.2, 0.2, 0.5, 0.0]),
    }
    # +2σ feature, −2σ feature (better than normal), +3σ ID, +3σ neighbours, +1σ −1σ −2σ
    assert vgae.anomaly_error(errors).tolist() == pytest.approx([2.0, 2.0, 3.0, 3.0, 4.0])
    # A term with no spread on normal windows is measured in units of 1e-8, not divided by 0.
    constant = {name: [0.5, 0.5] for name in ("feature_mse", "id_ce", "neighbour_bce")}
    assert error_statistics(constant) == ([0.5] * 3, [1e-8] * 3)
