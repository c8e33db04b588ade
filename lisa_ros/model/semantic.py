"""Semantic mode on a loaded ``LisaEngine``: descriptions, the category filter, batched masks.

One request (``SemanticSegmenter.segment``) on a frame:

1. descriptions: the user's file, else the disk cache, else LISA's LLM writes one
   (greedy, text only, short; cached by checkpoint id + category + prompt version as soon
   as it is written; a refusal is cached but never used);
2. filter: one batched pass asks "Is there a {category} in the image?" for every
   category and compares the next-token logits of "Yes" and "No";
3. masks: one batched pass of the forced answer "Sure, [SEG]." after "Please
   segment the {category}: {description}" for the categories kept; the ``[SEG]``
   states go through SAM's decoder as a batch, giving mask logits at source size;
4. the label image: per-pixel argmax (``lisa_ros.core.semantic.label_image``).

Both batched passes share the frame's CLIP features, SAM embedding and prompt-prefix
KV cache with ``LisaEngine.segment`` (the engine's ``FrameCache``). They are *packed*:
the prompts' own tokens (the ~15-60 after the image) are laid end to end in one sequence
after the shared prefix, each attending to the prefix and to itself only (a block-causal
mask) with the positions it would have alone. The prefix's keys and values are held once,
not once per category, and the result is what each prompt gives on its own (tested).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
from collections.abc import Hashable, Iterator, Mapping, Sequence

import numpy as np
import torch
from transformers.cache_utils import DynamicCache

from lisa_ros.core import semantic as core
from lisa_ros.core.description_cache import DescriptionCache
from lisa_ros.core.engine import EngineError, EngineOutOfMemory
from lisa_ros.core.semantic import CategoryError, SemanticOptions, SemanticResult
from lisa_ros.core.types import Status
from lisa_ros.model.frame_cache import EncodedFrame
from lisa_ros.model.generation import GenerationCancelled, PromptPrefix, expanded_length, generate
from lisa_ros.model.modeling import masks_per_call
from lisa_ros.model.tokenization import IMAGE_PLACEHOLDER, SYSTEM_PROMPT, LisaTokenizer, build_prompt_ids

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class CategoryMasks:
    logits: np.ndarray   # (categories, height, width) float32 mask logits at the frame's resolution
    scores: np.ndarray   # (categories,) SAM's IoU predictions


def _check_cancel(cancel: threading.Event | None, where: str) -> None:
    if cancel is not None and cancel.is_set():
        raise GenerationCancelled(f"semantic request cancelled during {where}")


# -- prompts ----------------------------------------------------------------------------------

def prefix_ids(tokenizer: LisaTokenizer, use_im_start_end: bool) -> list[int]:
    """Prompt ids up to and including the image placeholder: what every prompt on a frame shares."""
    ids = build_prompt_ids(tokenizer, "x", use_im_start_end=use_im_start_end)
    return ids[:ids.index(IMAGE_PLACEHOLDER) + 1]


def suffix_ids(tokenizer: LisaTokenizer, instruction: str, prefix: Sequence[int], use_im_start_end: bool) -> list[int]:
    """The prompt's ids after ``prefix``, exactly as ``LisaEngine.segment`` builds that prompt."""
    ids = build_prompt_ids(tokenizer, instruction, use_im_start_end=use_im_start_end)
    if tuple(ids[:len(prefix)]) != tuple(prefix):
        raise EngineError("the prompt does not start with the shared prefix (tokenizer changed?)")
    return ids[len(prefix):]


def answer_choice_ids(tokenizer: LisaTokenizer) -> tuple[list[int], int, int]:
    """(shared leading ids, first id where "Yes" differs, where "No" does).

    LLaMA's tokenizer has single pieces "▁Yes" / "▁No" (no shared ids); a small
    tokenizer may split them, so the comparison is made at the first differing token.
    """
    yes, no = tokenizer.encode_text("Yes"), tokenizer.encode_text("No")
    common = 0
    while common < min(len(yes), len(no)) and yes[common] == no[common]:
        common += 1
    if common == min(len(yes), len(no)):
        raise EngineError("the tokenizer cannot tell 'Yes' from 'No' by a token")
    return yes[:common], yes[common], no[common]


def prompt_prefix(engine, frame: EncodedFrame) -> PromptPrefix:
    """The frame's prompt-prefix KV cache: the one ``segment`` left, or built now and kept on the frame."""
    model, tokenizer = engine.model, engine.tokenizer
    ids = tuple(prefix_ids(tokenizer, model.config.use_im_start_end))
    if frame.prompt_prefix is not None and frame.prompt_prefix.ids == ids:
        return frame.prompt_prefix
    cache = DynamicCache(config=model.llm.config)
    model.decoder_hidden(model.embed(list(ids), frame.clip_features), cache)
    prefix = PromptPrefix(ids, cache)
    engine.frame_cache.keep_prefix(frame, prefix)
    return prefix


# -- the packed pass ------------------------------------------------------------------------------

def _chunks(lengths: Sequence[int], max_tokens: int) -> list[range]:
    """Consecutive index ranges whose lengths add up to at most ``max_tokens`` (one prompt at least)."""
    chunks, start, total = [], 0, 0
    for index, length in enumerate(lengths):
        if index > start and total + length > max_tokens:
            chunks.append(range(start, index))
            start, total = index, 0
        total += length
    if start < len(lengths):
        chunks.append(range(start, len(lengths)))
    return chunks


def packed_last_hidden(model, prefix: PromptPrefix, suffixes: Sequence[Sequence[int]], *, max_batch_tokens: int,
                       cancel: threading.Event | None = None) -> torch.Tensor:
    """(suffixes, hidden_size) last-layer hidden state at each suffix's last token, every suffix continuing
    ``prefix``.

    Each chunk runs one forward over the suffixes laid end to end: token j of suffix i
    sits at position ``P + j`` (P = prefix length) and attends to the prefix and to
    suffix i's tokens up to j, so each state equals the prompt's own.
    """
    if not suffixes:
        return torch.zeros(0, model.config.hidden_size, device=model.device)
    embeddings = model.llm.get_input_embeddings()
    lengths = [len(s) for s in suffixes]
    if min(lengths) < 1:
        raise ValueError("every suffix needs at least one token")
    states = []
    for chunk in _chunks(lengths, max_batch_tokens):
        _check_cancel(cancel, "a batched pass")
        cache = copy.deepcopy(prefix.cache)  # the shared prefix must not see this chunk's keys
        past = cache.get_seq_length()
        tokens = [t for i in chunk for t in suffixes[i]]
        owner = torch.cat([torch.full((lengths[i],), n, device=model.device) for n, i in enumerate(chunk)])
        position = torch.cat([torch.arange(lengths[i], device=model.device) for i in chunk])
        own = (owner[:, None] == owner[None, :]) & (position[None, :] <= position[:, None])  # block-causal
        mask = torch.cat([torch.ones(len(tokens), past, dtype=torch.bool, device=model.device), own], dim=1)
        output = model.llm.model(inputs_embeds=embeddings(torch.tensor([tokens], device=model.device)),
                                 past_key_values=cache, use_cache=True, attention_mask=mask[None, None],
                                 position_ids=(position + past)[None])
        ends = torch.tensor(np.cumsum([lengths[i] for i in chunk]) - 1, device=model.device)
        states.append(output.last_hidden_state[0, ends])
        del cache, output
    return torch.cat(states)


# -- the method's steps ---------------------------------------------------------------------------

def generate_descriptions(engine, categories: Sequence[str], *, max_new_tokens: int,
                          cancel: threading.Event | None = None) -> Iterator[str]:
    """One description per category from LISA's LLM (greedy, text only: a description is about the
    category, not the frame, so it can be cached), yielded as each is written so the caller can keep
    it before the next; tidied, but possibly a refusal (``core.usable_description`` judges)."""
    model, tokenizer = engine.model, engine.tokenizer
    no_image = torch.zeros(1, 0, model.config.hidden_size, device=model.device)
    for category in categories:
        _check_cancel(cancel, "description writing")
        question = core.DESCRIPTION_PROMPT.format(category=category)
        prompt = [tokenizer.bos_id] + tokenizer.encode_text(f"{SYSTEM_PROMPT} USER: {question} ASSISTANT:")
        generation = generate(model, prompt, no_image, eos_id=tokenizer.eos_id, seg_id=tokenizer.seg_id,
                              max_new_tokens=max_new_tokens, cancel=cancel)
        yield core.tidy_generated_description(tokenizer.decode(generation.token_ids))


def presence_probabilities(engine, frame: EncodedFrame, categories: Sequence[str], *, max_batch_tokens: int,
                           cancel: threading.Event | None = None) -> np.ndarray:
    """(n,) P(Yes) / (P(Yes) + P(No)) for "Is there a {category} in the image?", one packed pass."""
    model, tokenizer = engine.model, engine.tokenizer
    prefix = prompt_prefix(engine, frame)
    shared, yes_id, no_id = answer_choice_ids(tokenizer)
    suffixes = [suffix_ids(tokenizer, core.PRESENCE_QUESTION.format(category=c), prefix.ids,
                           model.config.use_im_start_end) + shared for c in categories]
    _check_context(engine, prefix, suffixes)
    hidden = packed_last_hidden(model, prefix, suffixes, max_batch_tokens=max_batch_tokens, cancel=cancel)
    logits = model.next_token_logits(hidden)
    return torch.sigmoid(logits[:, yes_id] - logits[:, no_id]).cpu().numpy().astype(np.float64)


def seg_hidden_states(engine, frame: EncodedFrame, instructions: Sequence[str], *, max_batch_tokens: int,
                      cancel: threading.Event | None = None) -> torch.Tensor:
    """(instructions, hidden_size) the hidden state that predicts ``[SEG]`` in the forced answer "Sure, [SEG]."
    to each instruction."""
    model, tokenizer = engine.model, engine.tokenizer
    prefix = prompt_prefix(engine, frame)
    forced = tokenizer.encode_with_added_tokens(core.FORCED_ANSWER)
    before_seg = forced[:forced.index(tokenizer.seg_id)]
    suffixes = [suffix_ids(tokenizer, i, prefix.ids, model.config.use_im_start_end) + before_seg
                for i in instructions]
    _check_context(engine, prefix, suffixes)
    return packed_last_hidden(model, prefix, suffixes, max_batch_tokens=max_batch_tokens, cancel=cancel)


def mask_chunks(engine, frame: EncodedFrame, seg_hidden: torch.Tensor, image_shape: tuple[int, int],
                timings: dict[str, float]) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """SAM's decoder on the ``[SEG]`` states, a few at a time: (rows, (rows, height, width) float32 logits at
    the frame's resolution, (rows,) IoU predictions), ``masks_per_call`` at a time."""
    model = engine.model
    if not len(seg_hidden):
        return
    embedding = frame.sam_embedding(timings)
    per_chunk = masks_per_call(image_shape)
    timings.setdefault("mask_decode", 0.0)
    for start in range(0, len(seg_hidden), per_chunk):
        tick = time.perf_counter()
        rows = slice(start, min(start + per_chunk, len(seg_hidden)))
        logits, iou = model.decode_masks(seg_hidden[rows], embedding, frame.sam_input_size, image_shape)
        chunk = rows, logits.cpu().numpy(), iou.cpu().numpy()
        timings["mask_decode"] += (time.perf_counter() - tick) * 1000
        yield chunk


def decode_category_masks(engine, frame: EncodedFrame, seg_hidden: torch.Tensor, image_shape: tuple[int, int],
                          timings: dict[str, float]) -> CategoryMasks:
    """Every category's mask logits at once (memory categories x height x width floats; ``SemanticSegmenter``
    folds the chunks into the label image instead)."""
    logits = np.zeros((len(seg_hidden), *image_shape), np.float32)
    scores = np.zeros(len(seg_hidden), np.float32)
    for rows, chunk_logits, chunk_scores in mask_chunks(engine, frame, seg_hidden, image_shape, timings):
        logits[rows], scores[rows] = chunk_logits, chunk_scores
    return CategoryMasks(logits, scores)


def _check_context(engine, prefix: PromptPrefix, suffixes: Sequence[Sequence[int]]) -> None:
    model = engine.model
    context = model.config.llama.max_position_embeddings
    tower = model.vision_tower.config
    positions = expanded_length(prefix.ids, (tower.image_size // tower.patch_size) ** 2)
    longest = max((len(s) for s in suffixes), default=0)
    if positions + longest >= context:
        raise CategoryError(f"a category prompt needs {positions + longest} positions, the model's context is "
                            f"{context}. Fix: shorten the category's name or description")


# -- one request --------------------------------------------------------------------------------

class SemanticSegmenter:
    """Semantic mode over one loaded ``LisaEngine``: one ``segment`` call per request.

    Not thread-safe (like the engine): call from the worker thread. ``cancel`` may be
    called from another thread to end a running request at its next batch or token.
    """

    def __init__(self, engine, options: SemanticOptions, cache: DescriptionCache | None = None,
                 descriptions: Mapping[str, str] | None = None):
        """descriptions: ``options.descriptions_file`` as already parsed (``core.load_descriptions``; the node
        parses it at configure, so a file edited before activate cannot fail activate); None = parse it now."""
        if engine.model is None:
            raise EngineError("the LISA engine is not loaded. Fix: call load() first")
        self.engine = engine
        self.options = options
        self.cache = cache if cache is not None else DescriptionCache(options.description_cache or None)
        if descriptions is None and options.descriptions_file:
            descriptions = core.load_descriptions(options.descriptions_file)
        self.user_descriptions = dict(descriptions or {})
        self._cancel = threading.Event()
        self._reported_unusable: set[str] = set()  # category keys

    def cancel(self) -> None:
        self._cancel.set()

    def describe(self, categories: Sequence[str]) -> tuple[list[str], list[str]]:
        """(descriptions, sources) per category: the user's file wins, then the cache, then the LLM.

        The cache is keyed by the engine's ``checkpoint_id`` and written after each description
        (one atomic rewrite: ~12 ms for 3000 entries, against seconds per description on a 7B), so a
        request cancelled or timed out midway keeps the ones already paid for. What the model
        wrote is cached as written, refusals included (greedy decoding would write them again); a
        refusal or empty text is never used: the category gets "" and a "-unusable" source, and the
        log says so.
        """
        key = self.engine.checkpoint_id
        descriptions, sources, missing = [], [], []
        for category in categories:
            user = self.user_descriptions.get(core.category_key(category))
            cached = None if user is not None else self.cache.get(key, core.PROMPT_VERSION, category)
            if user is not None:
                descriptions.append(user)
                sources.append("user")
            elif cached is not None and core.usable_description(cached):
                descriptions.append(cached)
                sources.append("cache")
            elif cached is not None:
                descriptions.append("")
                sources.append("cache-unusable")
                self._report_unusable(category, cached)
            elif self.options.generate_descriptions:
                descriptions.append("")
                sources.append("generated")
                missing.append(len(descriptions) - 1)
            else:
                descriptions.append("")
                sources.append("none")
        written = generate_descriptions(self.engine, [categories[i] for i in missing],
                                        max_new_tokens=self.options.max_description_tokens, cancel=self._cancel)
        for index, text in zip(missing, written):
            self.cache.put_many(key, core.PROMPT_VERSION, {categories[index]: text})
            if core.usable_description(text):
                descriptions[index] = text
                logger.info("semantic: %s wrote the description of %r: %r (cached in %s; put a better one in "
                            "semantic.descriptions_file)", self.engine.model_id, categories[index], text,
                            self.cache.path)
            else:
                sources[index] = "generated-unusable"
                self._report_unusable(categories[index], text)
        return descriptions, sources

    def _report_unusable(self, category: str, text: str) -> None:
        """Logged once per category and segmenter: a cached refusal would otherwise be logged on every frame."""
        if core.category_key(category) in self._reported_unusable:
            return
        self._reported_unusable.add(core.category_key(category))
        logger.warning("semantic: %s wrote no usable description of %r (%r); it is segmented without one. "
                       "Fix: describe it in semantic.descriptions_file (the outcome is cached in %s, so the "
                       "model is not asked again)", self.engine.model_id, category, text, self.cache.path)

    def segment(self, image: np.ndarray, categories: Sequence[str] | None = None, *,
                frame_key: Hashable) -> SemanticResult:
        """Label image and per-category figures for ``categories`` (default: ``options.categories``).

        Raises CategoryError for an unusable list (answer INVALID_INSTRUCTION), EngineError /
        EngineOutOfMemory / GenerationCancelled as ``LisaEngine.segment`` does.
        """
        requested = self.options.categories if categories is None else categories
        names = core.validate_categories(requested, self.options.max_categories)
        engine = self.engine
        if engine.model is None:
            raise EngineError("the LISA engine is not loaded. Fix: call load() first")
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3 and min(image.shape[:2]) > 0):
            raise EngineError(f"image must be a (height, width, 3) uint8 RGB array, got "
                              f"{getattr(image, 'shape', None)}")
        self._cancel.clear()
        try:
            with torch.inference_mode():
                return self._segment(image, names, frame_key)
        except torch.OutOfMemoryError as error:
            engine.clear_caches()
            raise EngineOutOfMemory(f"out of memory in semantic mode on {engine.options.device} ({error}). Caches "
                                    f"cleared. Fix: fewer categories, a lower semantic.max_batch_tokens, or "
                                    f"model.precision int4") from error

    def _segment(self, image: np.ndarray, names: list[str], frame_key: Hashable) -> SemanticResult:
        engine, options = self.engine, self.options
        start = time.perf_counter()
        timings: dict[str, float] = {}
        count = len(names)
        tick = time.perf_counter()
        descriptions, sources = self.describe(names)
        timings["describe"] = (time.perf_counter() - tick) * 1000
        frame = engine.frame_cache.encode(image, frame_key, timings)
        tick = time.perf_counter()
        prompt_prefix(engine, frame)  # once per frame: the system prompt and the image positions
        timings["prefix"] = (time.perf_counter() - tick) * 1000

        presence = np.full(count, np.nan)
        kept = list(range(count))
        filtered_out, reasons = [], []
        if options.filter_threshold > 0:
            tick = time.perf_counter()
            presence = presence_probabilities(engine, frame, names, max_batch_tokens=options.max_batch_tokens,
                                              cancel=self._cancel)
            timings["filter"] = (time.perf_counter() - tick) * 1000
            kept = [i for i in range(count) if presence[i] >= options.filter_threshold]
            for i in range(count):
                if presence[i] < options.filter_threshold:
                    filtered_out.append(names[i])
                    reasons.append(f"P(yes) {presence[i]:.3f} < filter_threshold {options.filter_threshold}")

        tick = time.perf_counter()
        instructions = [core.segment_instruction(names[i], descriptions[i]) for i in kept]
        seg_hidden = seg_hidden_states(engine, frame, instructions, max_batch_tokens=options.max_batch_tokens,
                                       cancel=self._cancel)
        timings["segment"] = (time.perf_counter() - tick) * 1000
        argmax = core.LabelArgmax(image.shape[:2], count, options.label_threshold)
        scores = np.zeros(count)
        timings["label"] = 0.0
        for rows, logits, iou in mask_chunks(engine, frame, seg_hidden, image.shape[:2], timings):
            _check_cancel(self._cancel, "mask decoding")
            tick = time.perf_counter()
            argmax.add(logits, [i + 1 for i in kept[rows]])
            scores[kept[rows]] = iou
            timings["label"] += (time.perf_counter() - tick) * 1000
        tick = time.perf_counter()
        label = argmax.label()
        fractions = core.label_fractions(label, count)
        timings["label"] += (time.perf_counter() - tick) * 1000
        timings["total"] = (time.perf_counter() - start) * 1000

        if fractions.sum() > 0:
            status, message = Status.OK, f"{int((fractions > 0).sum())} of {count} categories labelled"
        elif not kept:
            status, message = Status.NOT_FOUND, f"every category was filtered out (filter_threshold " \
                                                f"{options.filter_threshold}): see filtered_out"
        else:
            status, message = Status.NOT_FOUND, f"no pixel reached label_threshold {options.label_threshold} " \
                                                f"for the {len(kept)} categories kept"
        return SemanticResult(
            label=label, label_ids=list(range(1, count + 1)), label_names=names, scores=scores.tolist(),
            presence=presence.tolist(), fractions=fractions.tolist(), filtered_out=filtered_out,
            filtered_reasons=reasons, descriptions=descriptions, description_sources=sources, timings_ms=timings,
            status=status, message=message, model_id=engine.model_id)
