"""LISA's training loss, with the released training code's normalisation.

    loss = ce_weight x CE(answer tokens) + bce_weight x BCE(masks) + dice_weight x DICE(masks)

Masks are compared at the original image size. Per mask: BCE-with-logits averaged over its
pixels, DICE on sigmoid(logits) (both sums divided by ``DICE_SCALE``, eps ``DICE_EPS``). Per image:
the sum over its masks divided by its mask count, then weighted by that count; over the batch:
divided by the total mask count, so every mask weighs the same whatever image it is in. An
image with no masks (a negative) adds nothing to the mask terms (CE teaches its refusal).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F

DICE_SCALE = 1000.0  # LISA's ``scale``: keeps the sums of large masks in fp16/bf16 range
DICE_EPS = 1e-6
COUNT_EPS = 1e-8  # LISA divides by ``num_masks + 1e-8``


@dataclasses.dataclass(frozen=True)
class LossWeights:
    ce: float = 1.0
    bce: float = 2.0
    dice: float = 0.5


LISA_WEIGHTS = LossWeights()


@dataclasses.dataclass
class Losses:
    """Weighted total and its unweighted parts (0-dim tensors; ``total`` carries the graph)."""

    total: torch.Tensor
    ce: torch.Tensor
    bce: torch.Tensor
    dice: torch.Tensor


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """(n, H, W) logits and 0/1 targets -> sum over masks of ``1 - dice`` divided by ``num_masks``."""
    probabilities = logits.sigmoid().flatten(1, 2) / DICE_SCALE  # (n, H*W)
    targets = targets.flatten(1, 2)
    numerator = 2 * (probabilities * targets).sum(-1)
    denominator = probabilities.sum(-1) + (targets / DICE_SCALE).sum(-1)
    return (1 - (numerator + DICE_EPS) / (denominator + DICE_EPS)).sum() / (num_masks + COUNT_EPS)


def sigmoid_ce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """(n, H, W) logits and 0/1 targets -> sum over masks of the per-pixel mean BCE divided by ``num_masks``."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return per_pixel.flatten(1, 2).mean(1).sum() / (num_masks + COUNT_EPS)


def mask_losses(logits: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (n_i, H_i, W_i) logits and targets -> (BCE, DICE) over the batch, each mask weighing the same."""
    bce = dice = torch.zeros((), device=targets[0].device if targets else None)
    total_masks = 0
    for image_logits, image_targets in zip(logits, targets, strict=True):
        count = image_targets.shape[0]
        if count == 0:
            continue
        image_targets = image_targets.to(image_logits.dtype)
        bce = bce + sigmoid_ce_loss(image_logits, image_targets, count) * count
        dice = dice + dice_loss(image_logits, image_targets, count) * count
        total_masks += count
    return bce / (total_masks + COUNT_EPS), dice / (total_masks + COUNT_EPS)


def combine(ce: torch.Tensor, bce: torch.Tensor, dice: torch.Tensor, weights: LossWeights) -> Losses:
    return Losses(weights.ce * ce + weights.bce * bce + weights.dice * dice, ce, bce, dice)
