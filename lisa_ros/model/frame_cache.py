"""A frame's encodings, computed once and shared by every instruction on it.

In the spirit of segment_anything's ``SamPredictor`` (``set_image`` once, then many
``predict``): ``FrameCache.encode`` is the ``set_image`` of ``LisaEngine.segment`` and of
semantic mode. It returns an ``EncodedFrame`` holding the frame's pixels, CLIP features,
SAM's image embedding and the prompt-prefix KV cache, kept (least recently used first out)
under the caller's ``frame_key``.

A key is only a hint: two images may share one (an edited image resent with its header, a
camera with a coarse or constant clock), so a cached frame is used only when the pixels are
the same too (a comparison of ~2 ms at 1080p, against CLIP, SAM and the prefill it saves);
other pixels under a known key replace that entry. The cache keeps its own copy of the pixels
(~1 ms at 1080p), so a caller reusing its buffer cannot change a cached frame.

SAM (its preprocessing included) runs on its own thread, and on CUDA on its own stream, while
the LLM generates (``sam_on_thread``, the CUDA set-up); otherwise it runs only when an answer
holds a ``[SEG]``.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import time
from collections.abc import Callable, Hashable, Iterator, Mapping

import numpy as np
import torch

from lisa_ros.model.generation import PromptPrefix
from lisa_ros.model.modeling import LisaModel
from lisa_ros.model.preprocess import clip_pixels, sam_pixels

# SAM's image embedding, its resized input size (height, width; longest side 1024) and the ms it took.
SamEncoding = tuple[torch.Tensor, tuple[int, int], float]


class EncodedFrame:
    """One frame's work, shared by every instruction on it.

    ``image``: (height, width, 3) uint8 RGB, the cache's own read-only copy when cached (SAM's input is
    made from it only when needed; a cache hit must equal it). ``clip_features``: (1, image_tokens,
    hidden_size), 256 image tokens for LISA's CLIP ViT-L/14. ``serial`` tells frames apart, whatever
    their keys. ``prompt_prefix``: the KV cache of the prompt up to the image (``FrameCache.keep_prefix``).
    """

    def __init__(self, image: np.ndarray, clip_features: torch.Tensor, serial: int,
                 encode_sam: Callable[[np.ndarray], SamEncoding],
                 sam_future: concurrent.futures.Future | None = None) -> None:
        self.image = image
        self.clip_features = clip_features
        self.serial = serial
        self.prompt_prefix: PromptPrefix | None = None
        self.sam_future = sam_future  # SAM's encoding running on the cache's thread, until collected
        self.sam_input_size: tuple[int, int] | None = None  # SAM's resized input (height, width), once encoded
        self._encode_sam = encode_sam
        self._sam_embedding: torch.Tensor | None = None

    def matches(self, image: np.ndarray) -> bool:
        return np.array_equal(self.image, image)

    def sam_embedding(self, timings: dict[str, float]) -> torch.Tensor:
        """SAM's image embedding, (1, channels, grid, grid) ((1, 256, 64, 64) for ViT-H), computed once per
        frame: collected from its thread or computed now. ``timings["sam_encoder"]``: what the encoding took (on its
        thread it overlapped generation), 0 when it was already there."""
        if self._sam_embedding is not None:
            timings["sam_encoder"] = 0.0
            return self._sam_embedding
        if self.sam_future is not None:
            embedding, self.sam_input_size, timings["sam_encoder"] = self.sam_future.result()
            self.sam_future = None
            if embedding.is_cuda:  # allocated on SAM's stream, used (and later freed) on this one
                embedding.record_stream(torch.cuda.current_stream(embedding.device))
        else:
            embedding, self.sam_input_size, timings["sam_encoder"] = self._encode_sam(self.image)
        self._sam_embedding = embedding
        return embedding


class FrameCache(Mapping[Hashable, EncodedFrame]):
    """The ``size`` most recently used ``EncodedFrame`` by frame key (0: none kept, each frame is
    encoded for its request only), and the one prompt-prefix KV cache kept: the latest frame's.

    Not thread-safe (like the engine): used from the engine's thread. Reading it as a mapping
    (key -> frame) changes nothing.
    """

    def __init__(self, model: LisaModel, *, size: int, clip_preprocess: str, sam_on_thread: bool) -> None:
        self.model = model
        self.size = size
        self.clip_preprocess = clip_preprocess
        self._frames: collections.OrderedDict[Hashable, EncodedFrame] = collections.OrderedDict()
        self._serials = itertools.count(1)
        self._executor = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sam-encoder")
                          if sam_on_thread else None)
        self._sam_stream = torch.cuda.Stream(model.device) if sam_on_thread and model.device.type == "cuda" else None

    def __getitem__(self, frame_key: Hashable) -> EncodedFrame:
        return self._frames[frame_key]

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._frames)

    def __len__(self) -> int:
        return len(self._frames)

    def encode(self, image: np.ndarray, frame_key: Hashable, timings: dict[str, float]) -> EncodedFrame:
        """The frame's cached work when its pixels match, else CLIP now and SAM started on its thread
        (or left for ``EncodedFrame.sam_embedding``). Sets ``timings`` "preprocess" and "clip" (0 on a hit)."""
        frame = self._frames.get(frame_key)
        if frame is not None and frame.matches(image):
            self._frames.move_to_end(frame_key)
            timings.update(preprocess=0.0, clip=0.0)
            return frame
        tick = time.perf_counter()
        if self.size:
            image = image.copy()
            image.flags.writeable = False
        sam_future = self._executor.submit(self._encode_sam, image) if self._executor is not None else None
        clip_input = clip_pixels(image, self.model.vision_tower.config.image_size, self.clip_preprocess)
        timings["preprocess"] = (time.perf_counter() - tick) * 1000
        tick = time.perf_counter()
        clip_features = self.model.clip_features(clip_input)
        if self.model.device.type == "cuda":
            torch.cuda.current_stream().synchronize()
        timings["clip"] = (time.perf_counter() - tick) * 1000
        frame = EncodedFrame(image, clip_features, next(self._serials), self._encode_sam, sam_future)
        if self.size:
            self._frames[frame_key] = frame
            self._frames.move_to_end(frame_key)  # a replaced entry is the newest too
            while len(self._frames) > self.size:
                self._frames.popitem(last=False)
        return frame

    def keep_prefix(self, frame: EncodedFrame, prefix: PromptPrefix | None) -> None:
        """Keeps ``prefix`` on ``frame`` and drops every other frame's: older frames rarely get instructions,
        and one prefix is large (~150 MB for LISA-7B in fp16)."""
        if prefix is None or frame.prompt_prefix is prefix:
            return
        for other in self._frames.values():
            other.prompt_prefix = None
        frame.prompt_prefix = prefix

    def clear(self) -> None:
        """Forgets every frame (after an out-of-memory or a timeout); SAM work already started finishes."""
        self._frames.clear()

    def close(self) -> None:
        """Forgets every frame and ends SAM's thread (waits for its running encoding)."""
        self._frames.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def _encode_sam(self, image: np.ndarray) -> SamEncoding:
        """SAM's preprocessing and encoder: on SAM's thread (and stream, on CUDA), or in the caller's."""
        tick = time.perf_counter()
        sam_input = sam_pixels(image, self.model.config.sam.image_size)
        stream = self._sam_stream
        with torch.inference_mode(), torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            embedding = self.model.sam_image_embedding(sam_input.pin_memory() if stream is not None else sam_input)
        if stream is not None:
            stream.synchronize()
        return embedding, tuple(sam_input.shape[-2:]), (time.perf_counter() - tick) * 1000
