"""The published LISA code's inference path, kept as the ground truth the engine must reproduce.

No KV cache (the released config says ``use_cache: false``): every step re-encodes CLIP and
re-runs the whole sequence; SAM's encoder runs after generation. Parity tests and the
engine-vs-reference benchmark compare ``lisa_ros.model.generation.generate`` and
``LisaEngine`` against it; the node never runs it.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np
import torch

from lisa_ros.model.generation import Generation, choose_token, synchronize
from lisa_ros.model.modeling import LisaModel
from lisa_ros.model.preprocess import clip_pixels, sam_pixels
from lisa_ros.model.tokenization import LisaTokenizer, build_prompt_ids


@torch.inference_mode()
def reference_generate(
    model: LisaModel, prompt_ids: Sequence[int], clip_input: torch.Tensor, *, eos_id: int, seg_id: int,
    max_new_tokens: int, forced_ids: Sequence[int] | None = None,
) -> Generation:
    """The published code's generation: no KV cache (released config ``use_cache: false``).

    Every step re-encodes CLIP and re-runs the whole sequence. The ``[SEG]``
    states are then read, like the reference, from the last step's hidden states
    (which cover all but the final token) at the positions whose next token is ``[SEG]``.
    """
    if forced_ids is not None:
        max_new_tokens = min(max_new_tokens, len(forced_ids))
    start = time.perf_counter()
    tokens: list[int] = []
    hidden = None
    while len(tokens) < max_new_tokens:
        features = model.clip_features(clip_input)  # (1, 256, hidden_size), recomputed every step
        hidden = model.decoder_hidden(model.embed(list(prompt_ids) + tokens, features))  # (1, L + t, hidden_size)
        token = choose_token(model.next_token_logits(hidden[0, -1]), len(tokens), forced_ids)
        tokens.append(token)
        if token == eos_id:
            break
    seg_hidden = torch.zeros(0, model.config.hidden_size, device=model.device)
    if hidden is not None:
        # The last step covers all but the final token, so position ``first + j``
        # predicted generated token j; prompt tokens (earlier answers) never count.
        first = hidden.shape[1] - len(tokens)
        following = torch.tensor(tokens, device=hidden.device)
        seg_hidden = hidden[0, first:][following == seg_id].float()
    synchronize(model.device)
    return Generation(tokens, seg_hidden, 0.0,
                      (time.perf_counter() - start) * 1000)


@dataclasses.dataclass
class ReferenceResult:
    token_ids: list[int]
    text: str
    mask_logits: torch.Tensor      # (n, image_height, image_width) fp32
    scores: torch.Tensor           # (n,)

    @property
    def masks(self) -> list[np.ndarray]:
        return [m.cpu().numpy() > 0 for m in self.mask_logits]


@torch.inference_mode()
def reference_segment(
    model: LisaModel, tokenizer: LisaTokenizer, image: np.ndarray, instruction: str, *, max_new_tokens: int = 512,
    forced_ids: Sequence[int] | None = None,
) -> ReferenceResult:
    """One request as the published chat script runs it: generate, then SAM's encoder, then masks.

    Differences kept on purpose: every ``[SEG]`` gets a mask (the script keeps the
    first) and the ``[SEG]`` head runs in fp32 (``LisaModel.decode_masks``).
    """
    prompt = build_prompt_ids(tokenizer, instruction, use_im_start_end=model.config.use_im_start_end)
    generation = reference_generate(
        model, prompt, clip_pixels(image, model.vision_tower.config.image_size), eos_id=tokenizer.eos_id,
        seg_id=tokenizer.seg_id, max_new_tokens=max_new_tokens, forced_ids=forced_ids)
    pixels = sam_pixels(image, model.config.sam.image_size)
    embedding = model.sam_image_embedding(pixels)  # after generation, as in the reference
    if len(generation.seg_hidden):
        logits, scores = model.decode_masks(generation.seg_hidden, embedding, tuple(pixels.shape[-2:]),
                                            image.shape[:2])
    else:
        logits, scores = torch.zeros(0, *image.shape[:2]), torch.zeros(0)
    return ReferenceResult(generation.token_ids, tokenizer.decode(generation.token_ids), logits, scores)
