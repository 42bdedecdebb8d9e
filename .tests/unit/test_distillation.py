"""KD losses: zero when the student equals the teacher, hand-checkable values otherwise, frozen teachers."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdgat.distillation import freeze, gat_kd_loss, q_value_kd_loss, soft_target_kl, vgae_kd_loss
from kdgat.models import GAT


def test_gat_kd_term_is_zero_when_student_equals_teacher():
    logits = torch.tensor([[2.0, -1.0], [0.3, 0.1]])
    labels = torch.tensor([0, 1])
    parts = gat_kd_loss(logits, logits.clone(), labels, temperature=4.0, alpha=0.7)
    assert float(parts["kd"]) == pytest.approx(0.0, abs=1e-7)
    assert float(parts["loss"]) == pytest.approx(0.3 * float(F.cross_entropy(logits, labels)))


def test_soft_target_kl_by_hand():
    # Student uniform, teacher (at T=1) p = (0.8, 0.2): KL = 0.8 ln 1.6 + 0.2 ln 0.4, scaled by T² = 1.
    teacher = torch.tensor([[math.log(0.8), math.log(0.2)]])
    student = torch.zeros(1, 2)
    expected = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    assert float(soft_target_kl(student, teacher, 1.0)) == pytest.approx(expected)
    # With T = 2 the T² factor applies to the softened distributions.
    p = torch.softmax(teacher / 2, dim=1)[0]
    expected_t2 = 4 * float((p * (p / 0.5).log()).sum())
    assert float(soft_target_kl(student, teacher, 2.0)) == pytest.approx(expected_t2)


def test_gat_kd_weights_alpha_and_temperature():
    student, teacher = torch.zeros(1, 2), torch.tensor([[1.0, -1.0]])
    labels = torch.tensor([0])
    parts = gat_kd_loss(student, teacher, labels, temperature=2.0, alpha=0.25)
    expected = 0.25 * float(soft_target_kl(student, teacher, 2.0)) + 0.75 * math.log(2)
    assert float(parts["loss"]) == pytest.approx(expected)


def test_vgae_kd_loss_by_hand():
    z_t = torch.zeros(3, 4)
    recon = torch.full((3, 10), 0.5)
    parts = vgae_kd_loss(z_t.clone(), z_t, recon.clone(), recon, task_loss=torch.tensor(2.0), alpha=0.7)
    assert float(parts["kd"]) == 0.0 and float(parts["loss"]) == pytest.approx(0.3 * 2.0)
    parts = vgae_kd_loss(z_t + 1.0, z_t, recon, recon + 0.5, task_loss=torch.tensor(0.0), alpha=0.5)
    # latent MSE 1, reconstruction MSE 0.25 → kd = 0.625, loss = 0.5·0.625
    assert float(parts["kd"]) == pytest.approx(0.625) and float(parts["loss"]) == pytest.approx(0.3125)


def test_q_value_kd_loss():
    q = torch.randn(5, 21)
    assert float(q_value_kd_loss(q, q.clone(), torch.tensor(1.0), alpha=0.7)["kd"]) == 0.0
    parts = q_value_kd_loss(q + 2.0, q, torch.tensor(1.0), alpha=0.5)
    assert float(parts["loss"]) == pytest.approx(0.5 * 4.0 + 0.5 * 1.0)
    # α weighs the distillation term, 1 − α the TD loss.
    parts = q_value_kd_loss(q + 2.0, q, torch.tensor(1.0), alpha=0.25)
    assert float(parts["loss"]) == pytest.approx(0.25 * 4.0 + 0.75 * 1.0)
    assert float(parts["kd"]) == pytest.approx(4.0) and float(parts["td"]) == 1.0


def test_each_kd_loss_trains_the_student_on_both_of_its_terms():
    """The gradient of each loss is α·∇(distillation term) + (1−α)·∇(task loss): neither term is cut off."""
    torch.manual_seed(0)
    alpha = 0.3
    student, teacher, labels = (
        torch.randn(4, 2, requires_grad=True),
        torch.randn(4, 2),
        torch.tensor([0, 1, 1, 0]),
    )

    def grad(loss):
        return torch.autograd.grad(loss, student)[0]

    expected = alpha * grad(soft_target_kl(student, teacher, 2.0)) + (1 - alpha) * grad(
        F.cross_entropy(student, labels)
    )
    assert torch.allclose(grad(gat_kd_loss(student, teacher, labels, 2.0, alpha)["loss"]), expected)

    def task():  # a stand-in task loss of the student (its TD loss, its VGAE loss)
        return student.pow(2).sum()

    expected = alpha * grad(F.mse_loss(student, teacher)) + (1 - alpha) * grad(task())
    assert torch.allclose(grad(q_value_kd_loss(student, teacher, task(), alpha)["loss"]), expected)
    # The VGAE's two distillation terms, ½ each, are here the same MSE (latent and reconstruction alike).
    parts = vgae_kd_loss(student, teacher, student, teacher, task(), alpha)
    assert torch.allclose(grad(parts["loss"]), expected)


def test_freeze_puts_teacher_in_eval_without_gradients():
    teacher = freeze(GAT(10, embedding_dim=2, hidden=4, heads=1, num_layers=1))
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
