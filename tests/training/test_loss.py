"""The training loss: cross-entropy per label, optionally focal, optionally distilled."""

from __future__ import annotations

import torch

from training.train import FocalBCE, distilled_loss


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


def test_without_a_teacher_the_loss_is_the_label_loss() -> None:
    torch.manual_seed(1)
    logits, target = torch.randn(6, 3), (torch.rand(6, 3) > 0.5).float()
    loss_fn = FocalBCE(torch.tensor([3.0, 1.0, 2.0]), 0.0)
    assert torch.equal(distilled_loss(loss_fn, logits, target, None, 0.5), loss_fn(logits, target))


def test_distillation_gives_its_share_to_unweighted_cross_entropy_against_the_teacher() -> None:
    """(1 - w) * the weighted label loss + w * plain cross-entropy to the teacher's
    probabilities; alone (w = 1) it is least where the student says what the teacher says,
    whatever weights the label loss gives positives."""
    torch.manual_seed(2)
    logits, target = torch.randn(6, 3), (torch.rand(6, 3) > 0.5).float()
    teacher = torch.rand(6, 3)
    loss_fn = FocalBCE(torch.tensor([3.0, 1.0, 2.0]), 0.0)
    soft = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), teacher)
    mixed = distilled_loss(loss_fn, logits, target, teacher, 0.3)
    assert torch.allclose(mixed, 0.7 * loss_fn(logits, target) + 0.3 * soft, atol=1e-6)
    at_teacher = torch.logit(teacher).requires_grad_(True)
    distilled_loss(loss_fn, at_teacher, target, teacher, 1.0).backward()
    assert at_teacher.grad is not None
    assert at_teacher.grad.abs().max() < 1e-6
    # the label loss alone, with its positive weights, pulls those same logits away
    moved = torch.logit(teacher).requires_grad_(True)
    distilled_loss(loss_fn, moved, target, teacher, 0.0).backward()
    assert moved.grad is not None and moved.grad.abs().max() > 1e-2


def test_pool_rows_learn_from_the_teacher_alone_and_each_row_weighs_the_same() -> None:
    """Rows of the unlabelled pool (`taught_only`) have no label loss: the batch's loss is the
    mean over rows of a labelled row's mixed loss and a pool row's cross-entropy to the
    teacher; with no pool row in the batch it is the loss of a run without a pool."""
    torch.manual_seed(3)
    logits, target = torch.randn(8, 3), (torch.rand(8, 3) > 0.5).float()
    teacher = torch.rand(8, 3)
    loss_fn = FocalBCE(torch.tensor([3.0, 1.0, 2.0]), 0.0)
    none = torch.zeros(8, dtype=torch.bool)
    assert torch.allclose(
        distilled_loss(loss_fn, logits, target, teacher, 0.3, none),
        distilled_loss(loss_fn, logits, target, teacher, 0.3),
    )
    pool = torch.tensor([0, 1, 0, 0, 1, 1, 0, 0], dtype=torch.bool)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    rows = [
        bce(logits[i], teacher[i])
        if pool[i]
        else 0.7 * loss_fn(logits[i : i + 1], target[i : i + 1]) + 0.3 * bce(logits[i], teacher[i])
        for i in range(8)
    ]
    got = distilled_loss(loss_fn, logits, target, teacher, 0.3, pool)
    assert torch.allclose(got, torch.stack(rows).mean(), atol=1e-6)
    # a pool row's labels (none) never enter: changing them changes nothing
    flipped = target.clone()
    flipped[pool] = 1.0
    assert torch.equal(distilled_loss(loss_fn, logits, flipped, teacher, 0.3, pool), got)
    # a batch of pool rows only is the teacher's part alone
    every = torch.ones(8, dtype=torch.bool)
    assert torch.allclose(
        distilled_loss(loss_fn, logits, target, teacher, 0.3, every), bce(logits, teacher)
    )
