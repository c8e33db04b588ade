"""Greedy decoding with a KV cache (the reference path it must reproduce: ``reference``).

It returns, per generated ``[SEG]``, the last-layer hidden state of the position
that predicted it. ``forced_ids`` replaces the argmax by a scripted answer (the
hidden states are still the model's own): a random tiny model never emits
``[SEG]``, and benchmarks compare both paths on the same token sequence. With a
``CompiledDecodeStep`` (``model.compile``) the prefill is the same and the tokens after it
go through the compiled step over its static cache.
"""
from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence

import torch
from transformers.cache_utils import DynamicCache

from lisa_ros.core.engine import EngineError
from lisa_ros.model.compiled_decode import CompiledDecodeStep
from lisa_ros.model.modeling import LisaModel
from lisa_ros.model.tokenization import IMAGE_PLACEHOLDER


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
    seg_hidden: torch.Tensor       # (seg_count, hidden_size) fp32
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    prefix: PromptPrefix | None = None  # the one used or kept: for the next prompt starting with ``prefix.ids``
    prefix_reused: bool = False


def expanded_length(prompt_ids: Sequence[int], image_tokens: int) -> int:
    """Sequence length the LLM sees (the placeholder stands for ``image_tokens`` positions)."""
    return len(prompt_ids) - 1 + image_tokens if IMAGE_PLACEHOLDER in prompt_ids else len(prompt_ids)


def choose_token(logits: torch.Tensor, step: int, forced_ids: Sequence[int] | None) -> int:
    """The greedy choice, or the scripted answer's token at ``step``."""
    return int(forced_ids[step]) if forced_ids is not None else int(torch.argmax(logits))


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work, so a timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def generate(
    model: LisaModel, prompt_ids: Sequence[int], image_features: torch.Tensor, *, eos_id: int, seg_id: int,
    max_new_tokens: int, forced_ids: Sequence[int] | None = None, cancel: threading.Event | None = None,
    prefix: PromptPrefix | None = None, keep_prefix: bool = False,
    on_token: Callable[[Sequence[int], bool], None] | None = None, decode_step: CompiledDecodeStep | None = None,
) -> Generation:
    """Prefill the prompt once, then one cached step per token; stops at EOS or ``max_new_tokens``.

    ``prefix`` (from an earlier call on the same image features) skips prefilling
    the positions it holds when the prompt starts with its ids; without one,
    ``keep_prefix`` returns a copy of the prefill's cache cut after the image (the
    copy is the only cost). ``cancel``, checked
    between tokens, ends a call that overran its deadline (raises
    GenerationCancelled) so the next request need not wait behind it.
    ``on_token(ids so far, last)`` is called after each token (the list is read-only to it).
    ``decode_step`` (compiled once, shared by every call) decodes the tokens after the prefill.
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
        hidden = model.decoder_hidden(model.embed(prompt_ids, image_features), cache)[:, -1]  # (1, hidden_size)
        prefix = None
        if keep_prefix and IMAGE_PLACEHOLDER in prompt_ids[:-1]:  # causal: the first positions' K/V are the prefix's
            after_image = len(prompt_ids) - prompt_ids.index(IMAGE_PLACEHOLDER) - 1
            snapshot = copy.deepcopy(cache)
            snapshot.crop(-after_image)
            prefix = PromptPrefix(tuple(prompt_ids[:-after_image]), snapshot)
    synchronize(model.device)
    prefill_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    if decode_step is not None:
        decode_step.start(cache, fed_tokens=max_new_tokens - 1)  # the last token is never fed
    tokens: list[int] = []
    seg_hidden: list[torch.Tensor] = []
    embeddings = model.llm.get_input_embeddings()
    while len(tokens) < max_new_tokens:
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled(f"generation cancelled after {len(tokens)} tokens")
        token = choose_token(model.next_token_logits(hidden[0]), len(tokens), forced_ids)
        tokens.append(token)
        if token == seg_id:
            seg_hidden.append(hidden[0].float())
        last = token == eos_id or len(tokens) == max_new_tokens
        if on_token is not None:
            on_token(tokens, last)
        if last:
            break
        if decode_step is not None:
            hidden = decode_step(token)  # (1, hidden_size)
        else:
            step = embeddings(torch.tensor([[token]], device=model.device))  # (1, 1, hidden_size)
            hidden = model.decoder_hidden(step, cache)[:, -1]
    synchronize(model.device)
    return Generation(tokens, _stack(seg_hidden, model), prefill_ms, (time.perf_counter() - start) * 1000,
                      prefix, reused)


def _stack(states: list[torch.Tensor], model: LisaModel) -> torch.Tensor:
    if not states:
        return torch.zeros(0, model.config.hidden_size, device=model.device)
    return torch.stack(states)
