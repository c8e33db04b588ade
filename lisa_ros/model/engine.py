"""``LisaEngine``: the node's brain, behind ``lisa_ros.core.engine.Engine``.

Per request, a pipeline: the frame is encoded (``FrameCache``: CLIP features, SAM's image
embedding and the KV cache of the prompt up to the image, once per frame, in
``lisa_ros.model.frame_cache``); the prompt (``llava_v1``, with the conversation's earlier
turns) is decoded greedily with a KV cache; each ``[SEG]`` becomes a mask at the frame's
resolution with SAM's IoU prediction as its score (the ``max_masks`` best, chosen before
upsampling). On CUDA, SAM's preprocessing and image encoder run on their own stream in a
worker thread while the LLM generates; on the CPU they run only when an answer holds a ``[SEG]``.

Conversations: each ``conversation_id`` keeps its last ``max_history_turns``
(instruction, generated answer ids) pairs, replayed before the new instruction.
The prompt holds one image, in the first kept turn, and it is always the current
request's frame: when the frame changes between turns (another frame, or other pixels
under the same key) the history text is kept and the image is replaced by the new
frame (earlier answers then refer to a frame the model no longer sees).
``max_history_turns: 0`` is the reference's stateless
behaviour. Oldest turns are dropped first when the prompt would not fit the context.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import gc
import logging
import re
import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lisa_ros.core.bounds import shown
from lisa_ros.core.engine import Engine, EngineError, EngineOutOfMemory, InstructionTooLong
from lisa_ros.core.engine_options import LISA_OPTIONS
from lisa_ros.core.masks import best_mask_indices
from lisa_ros.core.types import EngineOutput, Progress, ProgressCallback, Stage
from lisa_ros.model.adapter import Adapter, adapted_tensors, adapter_name, adapter_problem, read_adapter
from lisa_ros.model.checkpoint import (
    checkpoint_identity,
    local_checkpoint_problem,
    resolve_checkpoint,
    resolve_vision_tower,
)
from lisa_ros.model.checkpoint_config import CONFIG_FILE, CheckpointError, load_lisa_config
from lisa_ros.model.compiled_decode import CompiledDecodeStep, compile_problem
from lisa_ros.model.frame_cache import EncodedFrame, FrameCache
from lisa_ros.model.generation import Generation, expanded_length, generate
from lisa_ros.model.loading import PRECISIONS, Placement, TensorSource, checkpoint_tensors, load_lisa_model
from lisa_ros.model.modeling import MASK_DECODE_BATCH, LisaModel, masks_per_call
from lisa_ros.model.preprocess import CLIP_MODES
from lisa_ros.model.quantization import BACKENDS, QUANTIZED_PRECISIONS
from lisa_ros.model.tokenization import LisaTokenizer, Turn, build_prompt_ids

logger = logging.getLogger(__name__)

MAX_CONVERSATIONS = 64  # least recently used conversations beyond this are forgotten


class _OptionChecks:
    """LisaOptions' checks; its fields (names, types, defaults) come from ``LISA_OPTIONS``."""

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> LisaOptions:
        """Validates types, ranges and combinations; raises ValueError naming every bad option at once."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        problems = []
        unknown = sorted(set(options) - set(fields))
        if unknown:
            problems.append(f"unknown LISA engine option(s) {unknown}; known: {sorted(fields)}")
        values = {}
        for name, value in options.items():
            if name not in fields:
                continue
            expected = type(fields[name].default)
            if type(value) is not expected:  # bool is not an int here, nor an int a bool
                problems.append(f"option {name!r} must be {expected.__name__}, got {shown(value)}")
            else:
                values[name] = value
        result = cls(**values)
        problems += result._problems()
        if problems:
            raise ValueError("; ".join(problems))
        return result

    def _problems(self) -> list[str]:
        problems = []
        if not self.path.strip():
            problems.append("option 'path' must name a Hugging Face id or a directory")
        elif (problem := local_checkpoint_problem(self.path)) is not None:
            problems.append(f"option 'path': {problem}")
        if self.adapter and (problem := adapter_problem(self.adapter)) is not None:
            problems.append(f"option 'adapter': {problem}")
        if self.precision not in PRECISIONS:
            problems.append(f"option 'precision' must be one of {PRECISIONS}, got {self.precision!r}")
        if self.quantization not in BACKENDS:
            problems.append(f"option 'quantization' must be one of {BACKENDS}, got {self.quantization!r}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            problems.append(f"option 'device' must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.device == "cpu" and self.precision == "fp16":
            problems.append("option 'precision' fp16 needs device cuda (CPU fp16 kernels are slow or missing); "
                            "use fp32 or bf16 on the CPU")
        if self.compile and (problem := compile_problem(torch.device(self.device.split(":")[0]))) is not None:
            problems.append(f"option 'compile': {problem}")
        if self.clip_preprocess not in CLIP_MODES:
            problems.append(f"option 'clip_preprocess' must be one of {CLIP_MODES}, got {self.clip_preprocess!r}")
        for name, low, high in (("max_new_tokens", 1, 8192), ("frame_cache_size", 0, 256),
                                ("max_history_turns", 0, 256)):
            if not low <= getattr(self, name) <= high:
                problems.append(f"option {name!r} must be in [{low}, {high}], got {getattr(self, name)}")
        return problems


# The ``model.<key>`` parameters of the node, declared in ``lisa_ros.core.engine_options``.
LisaOptions = dataclasses.make_dataclass(
    "LisaOptions", [(name, type(default), dataclasses.field(default=default))
                    for name, (default, _) in LISA_OPTIONS.items()],
    bases=(_OptionChecks,), frozen=True, namespace={"__module__": __name__})


@dataclasses.dataclass
class _Conversation:
    turns: list[Turn] = dataclasses.field(default_factory=list)
    frame_serial: int | None = None  # the EncodedFrame of the last turn


class LisaEngine(Engine):
    def __init__(self, options: LisaOptions, *, tensors: TensorSource | None = None):
        """tensors: where ``load`` gets the weights (default: the checkpoint's files; benchmarks pass
        random tensors of the checkpoint's shapes, see ``lisa_ros.model.loading``)."""
        self.options = options
        self._tensors = tensors
        path = Path(options.path).expanduser()
        self.model_id = path.name if path.is_dir() else options.path  # readable: logs and results
        if options.adapter:
            self.model_id += f"+{adapter_name(options.adapter)}"  # results say which adapter answered
        self.checkpoint_id = ""  # at load: model_id@checkpoint_identity(+adapter identity): keys the description cache
        self.adapter: Adapter | None = None  # while loaded with model.adapter
        self.model: LisaModel | None = None
        self.tokenizer: LisaTokenizer | None = None
        self.frame_cache: FrameCache | None = None  # while loaded; semantic mode shares it
        self._conversations: collections.OrderedDict[str, _Conversation] = collections.OrderedDict()
        self._cancel = threading.Event()
        self._decode_step: CompiledDecodeStep | None = None  # model.compile: built and compiled at load
        self._load_stats: dict[str, float] = {}

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> LisaEngine:
        return cls(LisaOptions.from_mapping(options))

    # -- lifecycle -------------------------------------------------------------------------

    def load(self) -> None:
        options = self.options
        device = torch.device(options.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise EngineError(f"model.device is {options.device!r} but CUDA is not available. Fix: set "
                              f"model.device to 'cpu' (with precision fp32) or install a CUDA build of torch")
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise EngineError(f"model.device is {options.device!r} but only {torch.cuda.device_count()} GPU(s) "
                              f"are visible. Fix: use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
        hub = dict(revision=options.revision, cache_dir=options.cache_dir, local_files_only=options.local_files_only)
        start = time.perf_counter()
        checkpoint_dir = resolve_checkpoint(options.path, **hub)
        config = load_lisa_config(checkpoint_dir)
        tokenizer = LisaTokenizer.from_directory(checkpoint_dir)
        if tokenizer.vocab_size > config.llama.vocab_size:
            raise CheckpointError(
                f"{checkpoint_dir / 'added_tokens.json'}: token ids reach {tokenizer.vocab_size - 1} but config.json "
                f"has vocab_size {config.llama.vocab_size}. Fix: the tokenizer files and the weights come from "
                f"different checkpoints; re-download the checkpoint")
        tower = options.vision_tower or config.vision_tower
        if not tower:
            raise CheckpointError(f"{checkpoint_dir / CONFIG_FILE} names no vision_tower. "
                                  f"Fix: set model.vision_tower "
                                  f"(e.g. openai/clip-vit-large-patch14 or a local directory)")
        clip_dir = resolve_vision_tower(tower, checkpoint_dir, **hub)
        tensors, adapter = self._tensors, None
        if options.adapter:
            adapter = read_adapter(options.adapter)
            adapter.check_base(checkpoint_dir)
            tensors = adapted_tensors(tensors or checkpoint_tensors(checkpoint_dir, clip_dir), adapter)
        try:
            placement = Placement(device, options.precision, options.quantization)
            model = load_lisa_model(checkpoint_dir, clip_dir, config, placement, tensors=tensors)
        except torch.OutOfMemoryError as error:
            self._empty_device_cache()
            raise EngineOutOfMemory(f"out of memory loading {self.model_id} in {options.precision}. Fix: use "
                                    f"model.precision int4 (LISA-7B needs < 10 GB) or a larger GPU") from error
        load_s = time.perf_counter() - start
        decode_step = self._compile_decode_step(model) if options.compile else None
        self.model, self.tokenizer, self._decode_step = model, tokenizer, decode_step
        self.adapter = adapter
        self._load_stats = {"load_s": round(load_s, 2)}
        if decode_step is not None:
            self._load_stats["decode_compile_s"] = round(decode_step.compile_seconds, 2)
        self.checkpoint_id = f"{self.model_id}@{checkpoint_identity(checkpoint_dir)}"
        if adapter is not None:
            self.checkpoint_id += f"+{adapter.identity}"  # an adapter's descriptions are its own
        self.frame_cache = FrameCache(model, size=options.frame_cache_size, clip_preprocess=options.clip_preprocess,
                                      sam_on_thread=device.type == "cuda")
        backend = f" {options.quantization}" if options.precision in QUANTIZED_PRECISIONS else ""
        logger.info("loaded %s (%s%s on %s) in %.1f s", self.model_id, options.precision, backend, device, load_s)

    def _compile_decode_step(self, model: LisaModel) -> CompiledDecodeStep:
        """``model.compile``: the decode step compiled (and warmed up) now, so no request pays for it."""
        try:
            decode_step = CompiledDecodeStep(model)
            decode_step.warm_up()
        except torch.OutOfMemoryError as error:
            self._empty_device_cache()
            raise EngineOutOfMemory(f"out of memory compiling the decode step of {self.model_id} (its static KV "
                                    f"cache holds the whole context). Fix: set model.compile false or use "
                                    f"model.precision int4") from error
        except Exception as error:  # inductor/dynamo raise many types; each is a configuration the user can drop
            raise EngineError(f"compiling the decode step failed ({type(error).__name__}: {error}). Fix: set "
                              f"model.compile false (eager decoding gives the same answers)") from error
        return decode_step

    def unload(self) -> None:
        """Frees everything, GPU memory included (the caller has nothing to clean up, even if this raises)."""
        try:
            if self.frame_cache is not None:
                self.frame_cache.close()
        finally:
            self.frame_cache = None
            self._conversations.clear()
            self.model = self.tokenizer = self.adapter = self._decode_step = None
            self._load_stats = {}
            gc.collect()
            self._empty_device_cache()

    def reset(self, conversation_id: str | None = None) -> None:
        if conversation_id is None:
            self._conversations.clear()
        else:
            self._conversations.pop(conversation_id, None)

    def clear_caches(self) -> None:
        if self.frame_cache is not None:
            self.frame_cache.clear()
        self._empty_device_cache()

    def cancel(self) -> None:
        """Ends the running ``segment`` at its next generated token (it raises EngineError)."""
        self._cancel.set()

    def memory_stats(self) -> dict[str, float]:
        device = torch.device(self.options.device)
        if device.type != "cuda" or not torch.cuda.is_available():
            return {}
        mb = 1024.0 ** 2
        return {
            "gpu_allocated_mb": torch.cuda.memory_allocated(device) / mb,
            "gpu_reserved_mb": torch.cuda.memory_reserved(device) / mb,
            "gpu_peak_allocated_mb": torch.cuda.max_memory_allocated(device) / mb,
        }

    def diagnostics(self) -> dict[str, str]:
        if self.adapter is None:
            return {}
        return {"adapter": self.adapter.name, "adapter_identity": self.adapter.identity}

    def load_stats(self) -> dict[str, float]:
        return dict(self._load_stats)

    def conversation(self, conversation_id: str = "default") -> list[Turn]:
        """The kept turns of a conversation (instruction, answer ids), oldest first."""
        entry = self._conversations.get(conversation_id)
        return list(entry.turns) if entry else []

    # -- inference -------------------------------------------------------------------------

    def segment(
        self, image: np.ndarray, instruction: str, *, frame_key: Hashable, conversation_id: str = "default",
        progress: ProgressCallback | None = None, max_masks: int | None = None,
        force_answer: str | Sequence[int] | None = None,
    ) -> EngineOutput:
        """``force_answer`` (tests, benchmarks): a scripted answer ("Sure, [SEG].") or token ids
        replacing the greedy choice; the hidden states and masks are still the model's."""
        if self.model is None or self.tokenizer is None:
            raise EngineError("the LISA engine is not loaded. Fix: call load() first")
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3 and min(image.shape[:2]) > 0):
            raise EngineError(f"image must be a (height, width, 3) uint8 RGB array, got "
                              f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image).__name__)}")
        try:
            with torch.inference_mode():
                return self._segment(image, instruction, frame_key, conversation_id, progress, max_masks,
                                     force_answer)
        except torch.OutOfMemoryError as error:
            self.clear_caches()
            raise EngineOutOfMemory(f"out of memory on {self.options.device} ({error}). Caches cleared. Fix: lower "
                                    f"model.max_new_tokens or model.frame_cache_size, or use model.precision int4"
                                    ) from error

    def _segment(self, image, instruction, frame_key, conversation_id, progress, max_masks,
                 force_answer) -> EngineOutput:
        self._cancel.clear()  # a cancel() belongs to the call it interrupted, never to the next one
        start = time.perf_counter()
        timings: dict[str, float] = {}
        frame = self.frame_cache.encode(image, frame_key, timings)
        prompt, history = self._prompt(instruction, conversation_id)
        generation = self._generate(frame, prompt, force_answer, progress)
        timings.update(prefill=generation.prefill_ms, decode=generation.decode_ms,
                       generate=generation.prefill_ms + generation.decode_ms)
        self.frame_cache.keep_prefix(frame, generation.prefix)
        masks, scores = self._masks(frame, generation.seg_hidden, image.shape[:2], max_masks, timings, progress)
        answer = [t for t in generation.token_ids if t != self.tokenizer.eos_id]
        self._remember(conversation_id, history, Turn(instruction, tuple(answer)), frame.serial)
        timings["total"] = (time.perf_counter() - start) * 1000
        return EngineOutput(masks=masks, scores=scores, text=self.tokenizer.decode(answer), timings_ms=timings,
                            masks_dropped=len(generation.seg_hidden) - len(masks))

    def _generate(self, frame: EncodedFrame, prompt: list[int], force_answer: str | Sequence[int] | None,
                  progress: ProgressCallback | None) -> Generation:
        """The answer's tokens and ``[SEG]`` states, reusing the frame's prompt prefix; GENERATING per token."""
        model, tokenizer = self.model, self.tokenizer
        context = model.config.llama.max_position_embeddings
        max_new_tokens = min(self.options.max_new_tokens,
                             context - expanded_length(prompt, frame.clip_features.shape[1]))
        forced = None
        if force_answer is not None:
            forced = (tokenizer.encode_with_added_tokens(force_answer) + [tokenizer.eos_id]
                      if isinstance(force_answer, str) else [int(t) for t in force_answer])
        on_token = None
        if progress is not None:
            def on_token(ids: Sequence[int], last: bool) -> None:
                answer = tuple(ids)
                decode = tokenizer.decode if last else tokenizer.decode_prefix
                progress(Progress(Stage.GENERATING, tokens=len(answer), text=functools.cache(lambda: decode(answer))))
        return generate(model, prompt, frame.clip_features, eos_id=tokenizer.eos_id, seg_id=tokenizer.seg_id,
                        max_new_tokens=max_new_tokens, forced_ids=forced, cancel=self._cancel,
                        prefix=frame.prompt_prefix, keep_prefix=self.options.frame_cache_size > 0, on_token=on_token,
                        decode_step=self._decode_step)

    def _masks(self, frame: EncodedFrame, seg_hidden: torch.Tensor, source_size: tuple[int, int],
               max_masks: int | None, timings: dict[str, float], progress: ProgressCallback | None
               ) -> tuple[list[np.ndarray], list[float]]:
        """(height, width) boolean masks with SAM's IoU predictions as scores for the ``[SEG]``s ``max_masks``
        keeps (``best_mask_indices``); DECODING first.

        With a ``max_masks``, memory does not grow with the number of ``[SEG]``s (up to ``max_new_tokens``):
        SAM's decoder runs ``MASK_DECODE_BATCH`` at a time, only the best low-resolution (256 x 256) masks so
        far are kept, and only those are upsampled to the frame, ``masks_per_call`` at a time.
        """
        if not len(seg_hidden):
            return [], []
        if progress is not None:
            progress(Progress(Stage.DECODING))
        embedding = frame.sam_embedding(timings)
        tick = time.perf_counter()
        model = self.model
        low_res, scores = [], np.zeros(0)  # the best so far, in the answer's order
        for start in range(0, len(seg_hidden), MASK_DECODE_BATCH):
            chunk, iou = model.decode_low_res(seg_hidden[start:start + MASK_DECODE_BATCH], embedding)
            low_res.append(chunk)
            scores = np.concatenate([scores, iou.cpu().numpy().astype(np.float64)])
            best = best_mask_indices(scores, max_masks)  # the kept so far come first: ties keep the earliest
            if len(best) < len(scores):
                low_res, scores = [torch.cat(low_res)[best]], scores[best]
        low_res = torch.cat(low_res)
        per_call = masks_per_call(source_size)
        masks = []
        for start in range(0, len(low_res), per_call):
            logits = model.upsample_masks(low_res[start:start + per_call], frame.sam_input_size, source_size)
            masks += list((logits > 0).cpu().numpy())
        timings["mask_decode"] = (time.perf_counter() - tick) * 1000
        return masks, scores.tolist()

    def _prompt(self, instruction: str, conversation_id: str) -> tuple[list[int], list[Turn]]:
        """Prompt ids with as many kept turns as fit the context (at least one new token)."""
        entry = self._conversations.get(conversation_id)
        limit = self.options.max_history_turns
        history = list(entry.turns[-limit:]) if entry and limit else []
        context = self.model.config.llama.max_position_embeddings
        image_tokens = (self.model.vision_tower.config.image_size // self.model.vision_tower.config.patch_size) ** 2
        use_im_start_end = self.model.config.use_im_start_end
        while True:
            prompt = build_prompt_ids(self.tokenizer, instruction, history, use_im_start_end=use_im_start_end)
            if expanded_length(prompt, image_tokens) < context:
                return prompt, history
            if not history:
                # The template, the image positions and one answer token take the rest of the context.
                tokens = len(self.tokenizer.encode_text(instruction.strip()))
                limit = context - 1 - (expanded_length(prompt, image_tokens) - tokens)
                raise InstructionTooLong(
                    f"the instruction is too long: {tokens} tokens, at most {limit} fit (the model's context of "
                    f"{context} tokens also holds the prompt template, {image_tokens} image positions and the "
                    f"answer). Fix: shorten the instruction")
            history = history[1:]

    def _remember(self, conversation_id: str, history: list[Turn], turn: Turn, frame_serial: int) -> None:
        if not self.options.max_history_turns:
            return
        entry = self._conversations.pop(conversation_id, None) or _Conversation()
        if entry.turns and entry.frame_serial != frame_serial:
            logger.debug("conversation %r: new frame; history text kept, image replaced", conversation_id)
        if logger.isEnabledFor(logging.DEBUG):  # decoded only when logged: random-weight benchmark shapes emit ids
            # past the tokenizer's pieces, which decode_raw refuses
            logger.debug("conversation %r answer: %s", conversation_id, self.tokenizer.decode_raw(turn.answer_ids))
        entry.turns = (history + [turn])[-self.options.max_history_turns:]
        entry.frame_serial = frame_serial
        self._conversations[conversation_id] = entry
        while len(self._conversations) > MAX_CONVERSATIONS:
            self._conversations.popitem(last=False)

    def _empty_device_cache(self) -> None:
        if self.options.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()
