"""The training loss: cross-entropy per label, optionally focal."""

from __future__ import annotations

import torch

from training.train import FocalBCE


def test_focal_gamma_zero_is_plain_weighted_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(8, 3), (torch.rand(8, 3) > 0.7).float()
    weight = torch.tensor([2.0, 1.0, 3.0])
    plain = torch.nn.BCEWithLogitsLoss(pos_weight=weight)(logits, target)
    assert torch.allclose(FocalBCE(weight, 0.0)(logits, target), plain)


def test_focal_loss_scales_each_term_by_how_wrong_the_model_is() -> None:
    """Each term is the weighted cross-entropy times (1 - p_t) ** gamma: a confident right
    answer almost vanishes, a confident wrong one keeps nearly all its weight (soft targets
    from label smoothing included)."""
    weight = torch.tensor([2.0])
    logits = torch.tensor([[4.0], [-4.0], [0.0]])
    target = torch.tensor([[0.95], [0.95], [0.05]])
    terms = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, target, pos_weight=weight, reduction="none"
    )
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    focal = FocalBCE(weight, 2.0)
    assert torch.allclose(focal(logits, target), (terms * (1 - p_t) ** 2).mean())
    right, wrong = (focal(logits[i : i + 1], target[i : i + 1]) for i in (0, 1))
    plain_right, plain_wrong = terms[0, 0], terms[1, 0]
    assert right / plain_right < 0.02  # confident and right: about (1 - 0.94) ** 2
    assert wrong / plain_wrong > 0.8  # confident and wrong: about (1 - 0.07) ** 2
