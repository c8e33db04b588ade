"""The single-token decode step compiled once (``model.compile``): a static KV cache and ``torch.compile``.

Eager decoding pays Python and one kernel launch per operation of every layer for each token: at batch 1
on a GPU that overhead, not the arithmetic, bounds tokens/s. Here the step (embedding, every decoder layer
and the final norm, for one token) is traced once into a graph over a ``StaticCache`` whose tensors never
move, so it compiles once and is reused for every token of every request. On CUDA the compiled step is
also captured in a CUDA graph: a token then costs one graph launch. The graph is captured by hand
(``torch.cuda.CUDAGraph``) rather than by ``mode="reduce-overhead"``, whose graph trees are per thread
(pytorch#123177): the engine is loaded on one thread and generates on another.

The prefill stays eager (its length changes with every prompt, and it runs once per request) and fills a
``DynamicCache`` as without compiling, so the frame's prompt-prefix reuse (``generation.PromptPrefix``) is
unchanged; ``start`` copies that cache into the static one before the first step.
"""
from __future__ import annotations

import logging
import shutil
import time

import torch
from torch.utils._triton import has_triton_package
from transformers.cache_utils import DynamicCache, StaticCache

from lisa_ros.model.modeling import LisaModel

logger = logging.getLogger(__name__)

WARM_UP_STEPS = 3  # compile, then autotuning and allocator warm-up before a CUDA graph is captured


def compile_problem(device: torch.device) -> str | None:
    """Why the decode step cannot be compiled on ``device`` here (inductor's toolchain missing), else None."""
    if device.type == "cpu" and not any(shutil.which(name) for name in ("c++", "g++", "clang++")):
        return ("model.compile on the CPU needs a C++ compiler (torch inductor builds its kernels with one). "
                "Fix: install g++ (apt-get install g++) or set model.compile false")
    if device.type == "cuda" and not has_triton_package():
        return ("model.compile on CUDA needs triton (torch inductor's GPU kernels). Fix: install the triton "
                "that matches this torch, or set model.compile false")
    return None


class CompiledDecodeStep:
    """One token in, the last-layer hidden state out, over a static KV cache of the model's whole context.

    Not thread-safe (like the engine). Memory: the static cache holds ``max_position_embeddings`` positions
    of K and V for every layer from load on (LISA-7B fp16: 2 x 32 x 2048 x 4096 x 2 bytes = 1 GiB).
    """

    def __init__(self, model: LisaModel) -> None:
        self.model = model
        config = model.llm.config
        self.capacity = config.max_position_embeddings
        device, dtype = model.device, model.llm.get_input_embeddings().weight.dtype
        heads = config.num_key_value_heads or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.cache = StaticCache(config=config, max_cache_len=self.capacity)
        self.cache.early_initialization(1, heads, head_dim, dtype, device)  # static addresses before tracing
        self._token = torch.zeros(1, 1, dtype=torch.long, device=device)  # the step's input, updated in place
        self._compiled = torch.compile(self._step, fullgraph=True, dynamic=False)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_output: torch.Tensor | None = None  # (1, hidden_size), rewritten by each replay
        self.compile_seconds = 0.0

    def _step(self, token: torch.Tensor) -> torch.Tensor:
        """(1, 1) token id -> (1, hidden_size); its position is the cache's length, which the step advances."""
        embedding = self.model.llm.get_input_embeddings()(token)  # (1, 1, hidden_size)
        output = self.model.llm.model(inputs_embeds=embedding, past_key_values=self.cache, use_cache=True)
        return output.last_hidden_state[:, -1]

    @torch.inference_mode()
    def warm_up(self) -> float:
        """Compiles the step (and captures its CUDA graph) on dummy tokens; returns the seconds it took.

        Called once at load so the first request does not pay for it. The dummy K/V it writes are
        overwritten or masked: ``start`` sets the cache's length before every request.
        """
        start = time.perf_counter()
        device = self.model.device
        if device.type == "cuda":
            side = torch.cuda.Stream(device)  # warm-up off the default stream, as graph capture requires
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(WARM_UP_STEPS):
                    self._set_length(0)
                    self._compiled(self._token)
            torch.cuda.current_stream(device).wait_stream(side)
            self._set_length(0)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._graph_output = self._compiled(self._token)
            torch.cuda.synchronize(device)
        else:
            for _ in range(WARM_UP_STEPS):
                self._set_length(0)
                self._compiled(self._token)
        self.compile_seconds = time.perf_counter() - start
        logger.info("compiled the decode step on %s in %.1f s (static KV cache of %d positions%s)", device,
                    self.compile_seconds, self.capacity, ", CUDA graph" if self._graph is not None else "")
        return self.compile_seconds

    def start(self, prefill: DynamicCache, fed_tokens: int) -> None:
        """Copies the prefill's K/V into the static cache and continues after them, for ``fed_tokens`` steps
        at most (positions past the prefill are from earlier requests and masked out by the causal mask, so
        they are not cleared)."""
        length = prefill.get_seq_length()
        if length + fed_tokens > self.capacity:
            raise ValueError(f"{length} prompt positions and {fed_tokens} decoded tokens do not fit the "
                             f"{self.capacity}-position static cache (the model's context); decode fewer tokens")
        for source, target in zip(prefill.layers, self.cache.layers, strict=True):
            target.keys[:, :, :length].copy_(source.keys)      # (1, kv_heads, length, head_dim)
            target.values[:, :, :length].copy_(source.values)
        self._set_length(length)

    def __call__(self, token: int) -> torch.Tensor:
        """Feeds ``token`` at the cache's next position: (1, hidden_size), the caller's own tensor."""
        self._token.fill_(token)
        if self._graph is not None:
            self._graph.replay()
            return self._graph_output.clone()  # the next replay rewrites the graph's output
        return self._compiled(self._token).clone()

    def _set_length(self, length: int) -> None:
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(length)  # in place: the compiled step reads it at its static address
