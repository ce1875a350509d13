"""Knowledge-distillation objectives for training a student on a frozen teacher's logits.

Touvron et al., "Training data-efficient image transformers & distillation through attention" (DeiT),
ICML 2021, Sec. 4 "Soft distillation" (Eq. 2, after Hinton et al. 2015) and "Hard-label distillation"
(Eq. 3). refq distils through the class token only (DeiT Table 3, row "DeiT: hard, class token"),
so the student keeps the ViT layout that the SARDFQ experiments quantize.
"""
from __future__ import annotations

import numpy as np

from refq.autograd import Tensor
from refq.autograd import functional as F

DISTILLATIONS = ("hard", "soft")


def hard_distillation_loss(student_logits: Tensor, labels: np.ndarray, teacher_logits: np.ndarray) -> Tensor:
    """DeiT Eq. 3: 1/2 CE(student, true label) + 1/2 CE(student, the teacher's top-1 class)."""
    teacher_labels = np.asarray(teacher_logits).argmax(-1)  # [B, classes] -> [B]
    return F.mul(F.add(F.cross_entropy(student_logits, labels), F.cross_entropy(student_logits, teacher_labels)),
                 0.5)


def soft_distillation_loss(student_logits: Tensor, labels: np.ndarray, teacher_logits: np.ndarray,
                           weight: float = 0.5, tau: float = 1.0) -> Tensor:
    """DeiT Eq. 2: (1 - weight) CE(student, label) + weight tau^2 KL(softmax(teacher/tau) || softmax(student/tau)).

    The KL term is written as a cross-entropy against the teacher's tempered probabilities; the two differ
    by the teacher's entropy, a constant that has no gradient."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"soft_distillation_loss: weight={weight}, expected a value in [0, 1]")
    if tau <= 0:
        raise ValueError(f"soft_distillation_loss: tau={tau}, expected a positive temperature")
    t = np.asarray(teacher_logits, np.float64) / tau  # [B, classes]
    p = np.exp(t - t.max(-1, keepdims=True))
    p = (p / p.sum(-1, keepdims=True)).astype(student_logits.dtype)  # teacher's tempered probabilities
    kl = F.mul(F.cross_entropy(F.mul(student_logits, 1.0 / tau), p), tau * tau)
    return F.add(F.mul(F.cross_entropy(student_logits, labels), 1.0 - weight), F.mul(kl, weight))


def distillation_loss(kind: str, student_logits: Tensor, labels: np.ndarray, teacher_logits: np.ndarray,
                      weight: float = 0.5, tau: float = 1.0) -> Tensor:
    """The objective named by `kind` ('hard': Eq. 3, 'soft': Eq. 2 with weight and tau)."""
    if kind == "hard":
        return hard_distillation_loss(student_logits, labels, teacher_logits)
    if kind == "soft":
        return soft_distillation_loss(student_logits, labels, teacher_logits, weight, tau)
    raise ValueError(f"distillation_loss: kind={kind!r}, expected one of {DISTILLATIONS}")
