"""LISA's mask losses: equal to a plain re-statement of the released training code on random logits."""
import pytest

torch = pytest.importorskip("torch")

from lisa_ros.training.losses import LISA_WEIGHTS, combine, mask_losses  # noqa: E402


def lisa_dice_loss(inputs, targets, num_masks, scale=1000, eps=1e-6):
    """LISA's ``dice_loss`` (model/LISA.py), as released."""
    inputs = inputs.sigmoid()
    inputs = inputs.flatten(1, 2)
    targets = targets.flatten(1, 2)
    numerator = 2 * (inputs / scale * targets).sum(-1)
    denominator = (inputs / scale).sum(-1) + (targets / scale).sum(-1)
    loss = 1 - (numerator + eps) / (denominator + eps)
    return loss.sum() / (num_masks + 1e-8)


def lisa_sigmoid_ce_loss(inputs, targets, num_masks):
    """LISA's ``sigmoid_ce_loss``, as released."""
    loss = torch.nn.functional.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.flatten(1, 2).mean(1).sum() / (num_masks + 1e-8)


def lisa_mask_loss(pred_masks, gt_masks, bce_weight=2.0, dice_weight=0.5):
    """The loop of LISAForCausalLM.forward that sums the per-image losses over a batch."""
    mask_bce_loss = mask_dice_loss = 0
    num_masks = 0
    for pred_mask, gt_mask in zip(pred_masks, gt_masks):
        mask_bce_loss += lisa_sigmoid_ce_loss(pred_mask, gt_mask, num_masks=gt_mask.shape[0]) * gt_mask.shape[0]
        mask_dice_loss += lisa_dice_loss(pred_mask, gt_mask, num_masks=gt_mask.shape[0]) * gt_mask.shape[0]
        num_masks += gt_mask.shape[0]
    return bce_weight * mask_bce_loss / (num_masks + 1e-8), dice_weight * mask_dice_loss / (num_masks + 1e-8)


def random_batch(generator, counts, sizes):
    logits = [torch.randn(n, h, w, generator=generator) * 4 for n, (h, w) in zip(counts, sizes)]
    targets = [(torch.rand(n, h, w, generator=generator) > 0.7).float() for n, (h, w) in zip(counts, sizes)]
    return logits, targets


@pytest.mark.parametrize("counts", [(1,), (1, 3), (2, 1, 4)])
def test_mask_losses_equal_lisas_on_random_logits(counts):
    generator = torch.Generator().manual_seed(len(counts))
    logits, targets = random_batch(generator, counts, [(48, 64), (30, 40), (17, 23)][:len(counts)])
    bce, dice = mask_losses(logits, targets)
    lisa_bce, lisa_dice = lisa_mask_loss(logits, targets)
    torch.testing.assert_close(LISA_WEIGHTS.bce * bce, lisa_bce, rtol=1.3e-6, atol=0.0)
    torch.testing.assert_close(LISA_WEIGHTS.dice * dice, lisa_dice, rtol=1.3e-6, atol=0.0)
    ce = torch.tensor(1.25)
    total = combine(ce, bce, dice, LISA_WEIGHTS).total
    torch.testing.assert_close(total, ce + lisa_bce + lisa_dice, rtol=1.3e-6, atol=0.0)


def test_every_mask_weighs_the_same_whatever_image_holds_it():
    """Per mask, not per image: a 3-mask image counts three times as much as a 1-mask image."""
    generator = torch.Generator().manual_seed(7)
    logits, targets = random_batch(generator, (1, 3), [(20, 20), (20, 20)])
    bce, _ = mask_losses(logits, targets)
    per_mask = [torch.nn.functional.binary_cross_entropy_with_logits(m, t) for lg, tg in zip(logits, targets)
                for m, t in zip(lg, tg)]
    torch.testing.assert_close(bce, torch.stack(per_mask).mean(), rtol=1.3e-6, atol=0.0)


def test_an_image_without_masks_adds_nothing():
    generator = torch.Generator().manual_seed(3)
    logits, targets = random_batch(generator, (2,), [(16, 16)])
    empty_logits, empty_targets = torch.zeros(0, 9, 9), torch.zeros(0, 9, 9)
    with_negative = mask_losses(logits + [empty_logits], targets + [empty_targets])
    for value, expected in zip(with_negative, mask_losses(logits, targets)):
        torch.testing.assert_close(value, expected, rtol=0.0, atol=0.0)
