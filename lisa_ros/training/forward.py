"""LisaModel's teacher-forced training forward and free-run prediction, on cached frozen features.

CLIP, the projector and SAM's image encoder never train, so each image's features are computed
once under no_grad and kept (``FeatureCache``): later epochs run only the LLM, the ``[SEG]`` head
and SAM's mask decoder. The prompt is built exactly as at inference (``build_prompt_ids``); the
answer's ``[SEG]`` hidden state is the last-layer state of the position that PREDICTS it, the
convention of ``lisa_ros.model.generation`` (and of LISA's ``seg_token_mask``).
"""
from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lisa_ros.model.generation import generate
from lisa_ros.model.modeling import MASK_DECODE_BATCH, LisaModel, masks_per_call
from lisa_ros.model.preprocess import clip_pixels, sam_pixels
from lisa_ros.model.tokenization import LisaTokenizer, build_prompt_ids
from lisa_ros.training.dataset import DatasetError, Sample
from lisa_ros.training.losses import LISA_WEIGHTS, Losses, LossWeights, combine, mask_losses

IGNORE = -100  # label of positions without a target (prompt, padding)


@dataclasses.dataclass(frozen=True)
class EncodedImage:
    """One image's frozen features, kept on the CPU."""

    clip_features: torch.Tensor        # (1, image_tokens, hidden_size) after the projector
    sam_embedding: torch.Tensor        # (1, 256, 64, 64) SAM image embedding
    sam_input_size: tuple[int, int]    # SAM's resized input (height, width), longest side 1024
    original_size: tuple[int, int]     # the image (height, width)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.clip_features, self.sam_embedding))


class FeatureCache:
    """Frozen features by image path, least recently used out beyond ``max_bytes`` (host memory)."""

    def __init__(self, model: LisaModel, max_bytes: int, clip_preprocess: str = "center_crop"):
        self.model = model
        self.max_bytes = max_bytes
        self.clip_preprocess = clip_preprocess
        self.bytes = 0
        self._entries: collections.OrderedDict[str, EncodedImage] = collections.OrderedDict()

    def get(self, key: str, image: np.ndarray) -> EncodedImage:
        """``image``: (H, W, 3) uint8 RGB, read only on a miss."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        encoded = encode_image(self.model, image, self.clip_preprocess)
        self._entries[key] = encoded
        self.bytes += encoded.nbytes
        while self.bytes > self.max_bytes and len(self._entries) > 1:
            self.bytes -= self._entries.popitem(last=False)[1].nbytes
        return encoded

    def __len__(self) -> int:
        return len(self._entries)


@torch.no_grad()
def encode_image(model: LisaModel, image: np.ndarray, clip_preprocess: str = "center_crop") -> EncodedImage:
    """The frozen encoders' outputs for one (H, W, 3) uint8 RGB image, as ``FrameCache`` computes them."""
    clip_input = clip_pixels(image, model.vision_tower.config.image_size, clip_preprocess)
    sam_input = sam_pixels(image, model.config.sam.image_size)
    return EncodedImage(model.clip_features(clip_input).cpu(), model.sam_image_embedding(sam_input).cpu(),
                        tuple(sam_input.shape[-2:]), tuple(image.shape[:2]))


@dataclasses.dataclass(frozen=True)
class Example:
    """A sample ready for the model."""

    sample: Sample
    encoded: EncodedImage
    masks: torch.Tensor        # (n, H, W) bool, n = 0 for a negative
    prompt_ids: list[int]      # as at inference, the image placeholder included
    answer_ids: list[int]      # the target answer's ids + EOS


def answer_ids(tokenizer: LisaTokenizer, sample: Sample) -> list[int]:
    """The taught answer + EOS; refuses an answer whose ``[SEG]`` count differs from the mask count."""
    ids = tokenizer.encode_with_added_tokens(sample.target_answer()) + [tokenizer.eos_id]
    seg_count = ids.count(tokenizer.seg_id)
    if seg_count != len(sample.masks):
        raise DatasetError(f"sample {sample.id!r}: its answer {sample.target_answer()!r} has {seg_count} [SEG] but "
                           f"the sample has {len(sample.masks)} mask(s). Fix: one [SEG] per mask in the answer")
    return ids


def make_example(model: LisaModel, tokenizer: LisaTokenizer, cache: FeatureCache, sample: Sample) -> Example:
    image, masks = sample.load()
    prompt = build_prompt_ids(tokenizer, sample.instruction, use_im_start_end=model.config.use_im_start_end)
    return Example(sample, cache.get(str(sample.image), image), torch.from_numpy(masks), prompt,
                   answer_ids(tokenizer, sample))


def teacher_forced_losses(model: LisaModel, seg_id: int, examples: Sequence[Example],
                          weights: LossWeights = LISA_WEIGHTS) -> Losses:
    """One micro-batch: CE on the answer tokens (mean over the batch's), BCE + DICE on every mask."""
    device = model.device
    sequences, labels, seg_positions = [], [], []
    for example in examples:
        answer = example.answer_ids
        fed = example.prompt_ids + answer[:-1]  # the EOS is predicted, never fed
        embedded = model.embed(fed, example.encoded.clip_features.to(device))[0]  # (L, hidden_size)
        first = embedded.shape[0] - len(answer)  # the position predicting the answer's first token
        target = torch.full((embedded.shape[0],), IGNORE, dtype=torch.long)
        target[first:] = torch.tensor(answer)
        sequences.append(embedded)
        labels.append(target)
        seg_positions.append([first + k for k, token in enumerate(answer) if token == seg_id])
    # Right padding: with causal attention it cannot change the real positions.
    inputs = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True)  # (B, L, hidden_size)
    targets = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=IGNORE).to(device)  # (B, L)
    hidden = model.decoder_hidden(inputs)  # (B, L, hidden_size)
    answered = targets != IGNORE
    ce = F.cross_entropy(model.next_token_logits(hidden[answered]), targets[answered])  # over (T, vocab)

    mask_logits, mask_targets = [], []
    for index, (example, positions) in enumerate(zip(examples, seg_positions)):
        if not positions:
            continue
        low_res, _ = model.decode_low_res(hidden[index, positions], example.encoded.sam_embedding.to(device))
        encoded = example.encoded
        mask_logits.append(model.upsample_masks(low_res, encoded.sam_input_size, encoded.original_size))  # (n, H, W)
        mask_targets.append(example.masks.to(device))
    bce, dice = mask_losses(mask_logits, mask_targets) if mask_logits else (ce.new_zeros(()), ce.new_zeros(()))
    return combine(ce, bce, dice, weights)


@torch.no_grad()
def predict_mask(model: LisaModel, tokenizer: LisaTokenizer, encoded: EncodedImage, instruction: str,
                 max_new_tokens: int) -> tuple[np.ndarray, list[int]]:
    """Free-run (greedy) answer -> (H, W) bool union of its masks (empty without ``[SEG]``) and the answer ids."""
    prompt = build_prompt_ids(tokenizer, instruction, use_im_start_end=model.config.use_im_start_end)
    generation = generate(model, prompt, encoded.clip_features.to(model.device), eos_id=tokenizer.eos_id,
                          seg_id=tokenizer.seg_id, max_new_tokens=max_new_tokens)
    union = np.zeros(encoded.original_size, bool)
    embedding = encoded.sam_embedding.to(model.device)
    per_call = min(MASK_DECODE_BATCH, masks_per_call(encoded.original_size))
    for start in range(0, len(generation.seg_hidden), per_call):
        low_res, _ = model.decode_low_res(generation.seg_hidden[start:start + per_call], embedding)
        logits = model.upsample_masks(low_res, encoded.sam_input_size, encoded.original_size)
        union |= (logits > 0).any(0).cpu().numpy()
    return union, generation.token_ids
