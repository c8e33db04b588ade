"""Greedy decoding with a KV cache, and the reference path it must reproduce.

Both return, per generated ``[SEG]``, the last-layer hidden state of the position
that predicted it. ``forced_ids`` replaces the argmax by a scripted answer (the
hidden states are still the model's own): a random tiny model never emits
``[SEG]``, and benchmarks compare both paths on the same token sequence.
"""
from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Sequence

import numpy as np
import torch
from transformers.cache_utils import DynamicCache

from lisa_ros.core.engine import EngineError
from lisa_ros.model.modeling import LisaModel
from lisa_ros.model.preprocess import clip_pixels, sam_pixels
from lisa_ros.model.tokenization import IMAGE_PLACEHOLDER, LisaTokenizer, build_prompt_ids


class GenerationCancelled(EngineError):
    """``generate`` stopped early because its cancel event was set."""


@dataclasses.dataclass
class PromptPrefix:
    """KV cache of the prompt up to and including the image: the same for every instruction on a frame.

    The system prompt and the 256 image positions are most of a prompt; a second
    instruction on the same frame prefills only what follows them.
    """

    ids: tuple[int, ...]           # prompt ids up to and including the image placeholder
    cache: DynamicCache            # never extended: each request works on a copy


@dataclasses.dataclass
class Generation:
    token_ids: list[int]           # generated ids, the final EOS included when emitted
    seg_hidden: torch.Tensor       # (n_seg, H) fp32
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    prefix: PromptPrefix | None = None  # the one used or kept: for the next prompt starting with ``prefix.ids``
    prefix_reused: bool = False


def expanded_length(prompt_ids: Sequence[int], image_tokens: int) -> int:
    """Sequence length the LLM sees (the placeholder stands for ``image_tokens`` positions)."""
    return len(prompt_ids) - 1 + image_tokens if IMAGE_PLACEHOLDER in prompt_ids else len(prompt_ids)


def _choose(logits: torch.Tensor, step: int, forced_ids: Sequence[int] | None) -> int:
    return int(forced_ids[step]) if forced_ids is not None else int(torch.argmax(logits))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def generate(
    model: LisaModel, prompt_ids: Sequence[int], image_features: torch.Tensor, *, eos_id: int, seg_id: int,
    max_new_tokens: int, forced_ids: Sequence[int] | None = None, cancel: threading.Event | None = None,
    prefix: PromptPrefix | None = None, keep_prefix: bool = False,
) -> Generation:
    """Prefill the prompt once, then one cached step per token; stops at EOS or ``max_new_tokens``.

    ``prefix`` (from an earlier call on the same image features) skips prefilling
    the positions it holds when the prompt starts with its ids; without one,
    ``keep_prefix`` returns a copy of the prefill's cache cut after the image (the
    copy is the only cost). ``cancel``, checked
    between tokens, ends a call that overran its deadline (raises
    GenerationCancelled) so the next request need not wait behind it.
    """
    if forced_ids is not None:
        max_new_tokens = min(max_new_tokens, len(forced_ids))
    start = time.perf_counter()
    prompt_ids = list(prompt_ids)
    reused = (prefix is not None and len(prompt_ids) > len(prefix.ids)
              and tuple(prompt_ids[:len(prefix.ids)]) == prefix.ids)
    if reused:
        cache = copy.deepcopy(prefix.cache)
        hidden = model.decoder_hidden(model.embed(prompt_ids[len(prefix.ids):], image_features), cache)[:, -1]
    else:
        cache = DynamicCache(config=model.llm.config)
        hidden = model.decoder_hidden(model.embed(prompt_ids, image_features), cache)[:, -1]  # (1, H)
        prefix = None
        if keep_prefix and IMAGE_PLACEHOLDER in prompt_ids[:-1]:  # causal: the first positions' K/V are the prefix's
            after_image = len(prompt_ids) - prompt_ids.index(IMAGE_PLACEHOLDER) - 1
            snapshot = copy.deepcopy(cache)
            snapshot.crop(-after_image)
            prefix = PromptPrefix(tuple(prompt_ids[:-after_image]), snapshot)
    _sync(model.device)
    prefill_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    tokens: list[int] = []
    seg_hidden: list[torch.Tensor] = []
    embeddings = model.llm.get_input_embeddings()
    while len(tokens) < max_new_tokens:
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled(f"generation cancelled after {len(tokens)} tokens")
        token = _choose(model.next_token_logits(hidden[0]), len(tokens), forced_ids)
        tokens.append(token)
        if token == seg_id:
            seg_hidden.append(hidden[0].float())
        if token == eos_id or len(tokens) == max_new_tokens:
            break
        step = embeddings(torch.tensor([[token]], device=model.device))  # (1, 1, H)
        hidden = model.decoder_hidden(step, cache)[:, -1]
    _sync(model.device)
    return Generation(tokens, _stack(seg_hidden, model), prefill_ms, (time.perf_counter() - start) * 1000,
                      prefix, reused)


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
        features = model.clip_features(clip_input)  # (1, 256, H), recomputed every step
        hidden = model.decoder_hidden(model.embed(list(prompt_ids) + tokens, features))  # (1, L + t, H)
        token = _choose(model.next_token_logits(hidden[0, -1]), len(tokens), forced_ids)
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
    _sync(model.device)
    return Generation(tokens, seg_hidden, 0.0,
                      (time.perf_counter() - start) * 1000)


def _stack(states: list[torch.Tensor], model: LisaModel) -> torch.Tensor:
    if not states:
        return torch.zeros(0, model.config.hidden_size, device=model.device)
    return torch.stack(states)


@dataclasses.dataclass
class ReferenceResult:
    token_ids: list[int]
    text: str
    mask_logits: torch.Tensor      # (n, H, W) fp32
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
