"""Knowledge-distillation losses (teacher → student) for the three stages, and teacher freezing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def freeze(teacher: nn.Module) -> nn.Module:
    """Teachers only give targets: eval mode (no dropout, running batch-norm stats) and no gradients."""
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def soft_target_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T²·KL(softmax(t/T) ‖ softmax(s/T)), batch mean: the T² keeps gradients comparable across temperatures."""
    return (
        F.kl_div(
            F.log_softmax(student_logits / temperature, dim=-1),
            F.softmax(teacher_logits / temperature, dim=-1),
            reduction="batchmean",
        )
        * temperature**2
    )


def gat_kd_loss(student_logits, teacher_logits, labels, temperature: float = 4.0, alpha: float = 0.7) -> dict:
    """α·T²·KL(teacher ‖ student soft targets) + (1−α)·CE(student, labels)."""
    kd = soft_target_kl(student_logits, teacher_logits, temperature)
    ce = F.cross_entropy(student_logits, labels)
    return {"loss": alpha * kd + (1 - alpha) * ce, "kd": kd, "ce": ce}


class LatentProjection(nn.Module):
    """Learned linear map from the student's latent space to the teacher's (trained with the student)."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.linear = nn.Linear(student_dim, teacher_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z)


def vgae_kd_loss(
    projected_student_latent,
    teacher_latent,
    student_features,
    teacher_features,
    task_loss,
    alpha: float = 0.7,
) -> dict:
    """α·(½·MSE(proj(μ_s), μ_t) + ½·MSE(recon_s, recon_t)) + (1−α)·task loss, on the latent means μ (the
    encoders' outputs before sampling: a sampled z would add noise to the target)."""
    latent = F.mse_loss(projected_student_latent, teacher_latent)
    reconstruction = F.mse_loss(student_features, teacher_features)
    kd = 0.5 * latent + 0.5 * reconstruction
    return {
        "loss": alpha * kd + (1 - alpha) * task_loss,
        "kd": kd,
        "kd_latent": latent,
        "kd_recon": reconstruction,
    }


def q_value_kd_loss(student_q, teacher_q, td_loss, alpha: float = 0.7, weights=None) -> dict:
    """α·MSE(Q_student, Q_teacher) over all actions + (1−α)·TD loss: regress on the teacher's whole Q-row.

    ``weights`` (one per row, >= 0) weigh each row's squared error; the mean is over the rows' total weight (a
    batch with no weight distils nothing)."""
    if weights is None:
        kd = F.mse_loss(student_q, teacher_q)
    else:
        per_row = (student_q - teacher_q).pow(2).mean(dim=1)
        kd = (weights * per_row).sum() / weights.sum().clamp_min(1.0)
    return {"loss": alpha * kd + (1 - alpha) * td_loss, "kd": kd, "td": td_loss}
