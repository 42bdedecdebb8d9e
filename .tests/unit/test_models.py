"""Shapes of the three models, their losses on hand-checkable tensors and the size presets' parameter counts."""

import math

import pytest
import torch
from testkit import REPO
from torch.distributions import Normal
from torch.distributions import kl_divergence as gaussian_kl
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
    # A term with no spread on normal windows is measured in units of 1e-5 of its mean (RELATIVE_STD_FLOOR), not
    # divided by 0 (nor by 1e-8, before 2026-12-07: float rounding became a z-score of ~10); 1e-8 where the mean is 0.
    constant = {name: [0.5, 0.5] for name in ("feature_mse", "id_ce", "neighbour_bce")}
    assert error_statistics(constant) == ([0.5] * 3, [0.5 * 1e-5] * 3)
    assert error_statistics({name: [0.0, 0.0] for name in constant}) == ([0.0] * 3, [1e-8] * 3)


def test_vgae_encoder_is_multi_head_in_its_first_layer_only_and_the_decoders_hidden_layers_in_all():
    """The module docstring's layout and docs/models.md's one difference from the original that leaves the counts
    unchanged (heads only split a layer's width, so the parameter-count tests cannot see them)."""
    vgae = VGAE(20, embedding_dim=4, hidden_dims=(16, 8, 4), latent_dim=6, heads=2)
    layout = {
        part: [(conv.heads, conv.heads * conv.out_channels) for conv in convs]
        for part, convs in (("encoder", vgae.encoder), ("decoder", vgae.decoder), ("out", [vgae.feature_out]))
    }
    assert layout == {
        "encoder": [(2, 16), (1, 8), (1, 4)],
        "decoder": [(2, 4), (2, 8)],  # reversed(hidden_dims) without its last, the encoder's first width
        "out": [(1, 10)],
    }


def test_reparameterisation_samples_the_latent_gaussian_in_training_and_is_its_mean_in_eval():
    """z = μ + ε·σ with σ = exp(½·log σ²) while training; z = μ in eval mode (deterministic scores)."""
    vgae = VGAE(4, embedding_dim=2, hidden_dims=(4,), latent_dim=2)
    mean = torch.tensor([0.3, -1.0]).repeat(20_000, 1)
    sigma = torch.tensor([2.0, 0.5])
    logvar = (sigma**2).log().repeat(20_000, 1)
    torch.manual_seed(0)
    z = vgae.train().reparameterize(mean, logvar)
    # Standard errors of the sample mean and std: σ/√n ≈ 0.014 and σ/√(2n) ≈ 0.01 at most.
    assert z.mean(dim=0).tolist() == pytest.approx(mean[0].tolist(), abs=0.06)
    assert z.std(dim=0).tolist() == pytest.approx(sigma.tolist(), rel=0.03)
    assert torch.equal(vgae.eval().reparameterize(mean, logvar), mean)


def test_encoder_log_variance_is_clamped_on_both_sides():
    graphs = toy_graphs(3, num_ids=20, seed=0)
    batch = Batch.from_data_list(graphs)
    vgae = VGAE(20, embedding_dim=4, hidden_dims=(8,), latent_dim=2, logvar_clamp=3.0).eval()
    with torch.no_grad():
        vgae.logvar_head.weight.zero_()
        vgae.logvar_head.bias.copy_(torch.tensor([50.0, -50.0]))  # a diverging head, either way
        _, logvar = vgae.encode(batch.x, batch.edge_index)
    assert torch.equal(logvar, torch.tensor([3.0, -3.0]).expand(batch.num_nodes, 2))


def test_dropout_acts_in_training_mode_only():
    """Two training-mode passes differ by their dropout masks alone (no dropout: equal); eval mode is deterministic.
    The encoders only: the VGAE's mean involves no sampling."""
    batch = Batch.from_data_list(toy_graphs(4, num_ids=20, seed=1))
    x, edge_index = batch.x, batch.edge_index
    for dropout in (0.5, 0.0):
        torch.manual_seed(0)
        models = {
            "vgae": (
                VGAE(20, embedding_dim=4, hidden_dims=(16, 8), latent_dim=6, dropout=dropout),
                lambda model: model.encode(x, edge_index)[0],
            ),
            "gat": (
                GAT(20, embedding_dim=4, hidden=8, heads=2, dropout=dropout),
                lambda model: model.embed(x, edge_index, batch.batch),
            ),
        }
        with torch.no_grad():
            for name, (model, encode) in models.items():
                model.train()
                assert torch.equal(encode(model), encode(model)) == (dropout == 0.0), (name, dropout)
                model.eval()
                assert torch.equal(encode(model), encode(model)), name


def test_kl_divergence_equals_the_gaussians_closed_form_for_any_variance():
    """KL(N(μ, σ²) ‖ N(0, 1)) per dimension, averaged, against torch.distributions' own closed form."""
    generator = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(5, 3, generator=generator), torch.randn(5, 3, generator=generator)
    expected = gaussian_kl(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).mean()
    assert float(kl_divergence(mean, logvar)) == pytest.approx(float(expected), rel=1e-5)


def test_a_zero_anomaly_threshold_still_maps_errors_into_the_unit_interval():
    """A threshold of 0 (normal validation errors all 0 at their 95th percentile) gives 0 for error 0 and about
    1 above it, not NaN."""
    vgae = VGAE(4, embedding_dim=2, hidden_dims=(4,), latent_dim=2)
    vgae.anomaly_threshold.fill_(0.0)
    scores = vgae.calibrated_anomaly(torch.tensor([0.0, 1e-3, 5.0]))
    assert scores.tolist() == [0.0, 1.0, 1.0]


def test_error_statistics_of_one_normal_graph_measure_in_raw_units():
    """One graph has no spread to standardise by: the docstring's std of 1, not the 1e-8 floor of a constant term
    over several graphs (which would blow every deviation up by 10⁸)."""
    one = {"feature_mse": [0.01], "id_ce": [2.0], "neighbour_bce": [0.3]}
    assert error_statistics(one) == ([pytest.approx(0.01), 2.0, pytest.approx(0.3)], [1.0] * 3)


def test_the_size_table_of_docs_models_md_is_the_presets_at_the_originals_vocabulary():
    """docs/models.md, "Sizes": the original's published counts "are its code at a vocabulary of **30 CAN IDs**; at
    30 IDs ours are equal", and its table gives them per preset and stage."""
    text = (REPO / "docs/models.md").read_text()
    assert (
        f"at a vocabulary of **{REFERENCE_NUM_IDS} CAN IDs**; at {REFERENCE_NUM_IDS} IDs ours are equal"
        in " ".join(text.split())
    )
    rows = {}
    for preset in ("teacher", "student"):
        (row,) = [line for line in text.splitlines() if line.startswith(f"| {preset} ")]
        rows[preset] = [int(cell.strip().replace(",", "")) for cell in row.split("|")[2:5]]
    counts = {
        preset: [
            count_parameters(BUILD[stage](resolve_preset(preset, stage))) for stage in ("vgae", "gat", "dqn")
        ]
        for preset in ("teacher", "student")
    }
    assert rows == counts
