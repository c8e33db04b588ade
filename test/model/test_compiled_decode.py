"""``model.compile``: the decode step compiled once at load (inductor on this CPU) answers as eager decoding does."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lisa_ros.core.engine import EngineError
from lisa_ros.core.types import Stage
from lisa_ros.model.generation import generate
from lisa_ros.model.tokenization import build_prompt_ids

# (frame, conversation, instruction, forced answer): free-run answers of the trained tiny model, a second
# instruction on a frame (its prompt prefix reused), a conversation's second turn, a refusal, forced [SEG]s.
REQUESTS = (
    ("f", "a", "Please segment the cup.", None),
    ("f", "b", "What is the dog in this image? Please respond with segmentation mask.", None),
    ("f", "a", "Please segment the car and the person.", None),
    ("g", "c", "Hello!", None),
    ("g", "c", "Segment every part.", "Sure, [SEG], [SEG] and [SEG]."),
)


@pytest.fixture(scope="module")
def compiled(make_engine, tiny_7b):
    engine = make_engine(tiny_7b.lisa_dir, compile=True)
    yield engine
    engine.unload()


@pytest.fixture()
def compiled_engine(compiled):
    compiled.reset()
    yield compiled
    compiled.reset()


def graphs_compiled() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def test_compiled_decoding_gives_the_tokens_and_masks_of_eager_decoding(compiled_engine, engine, frame):
    other = np.ascontiguousarray(frame[::-1])
    graphs = graphs_compiled()
    assert graphs > 0  # the engine's load traced the step
    for frame_key, conversation, instruction, forced in REQUESTS:
        image = frame if frame_key == "f" else other
        outputs = [e.segment(image, instruction, frame_key=f"compiled-{frame_key}", conversation_id=conversation,
                             force_answer=forced) for e in (compiled_engine, engine)]
        answers = [e.conversation(conversation)[-1].answer_ids for e in (compiled_engine, engine)]
        assert answers[0] == answers[1], instruction
        assert outputs[0].text == outputs[1].text
        assert len(outputs[0].masks) == len(outputs[1].masks) == answers[0].count(engine.tokenizer.seg_id)
        for mine, theirs in zip(outputs[0].masks, outputs[1].masks, strict=True):
            assert np.array_equal(mine, theirs)
        np.testing.assert_allclose(outputs[0].scores, outputs[1].scores, rtol=0, atol=1e-5)
    assert compiled_engine.conversation("a")[0].instruction == REQUESTS[0][2]  # the third request was a turn
    assert len(outputs[0].masks) == 3  # the last request's forced [SEG]s
    assert graphs_compiled() == graphs  # compiled once, at load: no request traced a graph


def test_prompt_prefix_is_reused_with_the_compiled_step(compiled_engine, frame):
    model, tokenizer, step = compiled_engine.model, compiled_engine.tokenizer, compiled_engine._decode_step
    features = compiled_engine.frame_cache.encode(frame, "compiled-prefix", {}).clip_features
    common = dict(eos_id=tokenizer.eos_id, seg_id=tokenizer.seg_id, max_new_tokens=8,
                  forced_ids=tokenizer.encode_with_added_tokens("Sure, [SEG] and [SEG].") + [tokenizer.eos_id])
    first = generate(model, build_prompt_ids(tokenizer, "Segment the cup."), features, keep_prefix=True,
                     decode_step=step, **common)
    prompt = build_prompt_ids(tokenizer, "Where is the dog? Please output segmentation mask.")
    reused = generate(model, prompt, features, prefix=first.prefix, decode_step=step, **common)
    eager = generate(model, prompt, features, prefix=first.prefix, **common)
    assert reused.prefix_reused and eager.prefix_reused
    assert reused.token_ids == eager.token_ids and reused.seg_hidden.shape == (2, model.config.hidden_size)
    torch.testing.assert_close(reused.seg_hidden, eager.seg_hidden, rtol=0, atol=1e-5)


def test_progress_and_cancellation_between_compiled_tokens(compiled_engine, frame):
    ask = dict(frame_key="compiled-progress")
    # Keeps the frame's prompt prefix: every call below reuses it (each in its own conversation: same prompt).
    compiled_engine.segment(frame, "Hello!", conversation_id="p0", **ask)
    reports = []
    out = compiled_engine.segment(frame, "Please segment the cup.", progress=reports.append, conversation_id="p1",
                                  **ask)
    generating = [r.tokens for r in reports if r.stage is Stage.GENERATING]
    assert generating == list(range(1, len(generating) + 1)) and len(generating) >= 4
    assert reports[-1].stage is Stage.DECODING and len(out.masks) == 1

    def cancel_at_third(progress):
        if progress.stage is Stage.GENERATING and progress.tokens == 3:
            compiled_engine.cancel()

    with pytest.raises(EngineError, match="cancelled after 3 tokens"):
        compiled_engine.segment(frame, "Please segment the cup.", progress=cancel_at_third, conversation_id="p2",
                                **ask)
    # The cancelled request left the static cache in use: the next one starts afresh and answers alike.
    again = compiled_engine.segment(frame, "Please segment the cup.", conversation_id="p3", **ask)
    assert again.text == out.text and np.array_equal(again.masks[0], out.masks[0])


def test_compile_time_is_reported(compiled_engine, engine):
    stats = compiled_engine.load_stats()
    assert stats["decode_compile_s"] > 0 and stats["load_s"] > 0
    assert "decode_compile_s" not in engine.load_stats()  # model.compile false: nothing compiled


def test_decoding_past_the_static_cache_is_refused(compiled_engine, frame):
    model, tokenizer, step = compiled_engine.model, compiled_engine.tokenizer, compiled_engine._decode_step
    features = compiled_engine.frame_cache.encode(frame, "compiled-long", {}).clip_features
    with pytest.raises(ValueError, match="static cache"):
        generate(model, build_prompt_ids(tokenizer, "Segment the cup."), features, eos_id=tokenizer.eos_id,
                 seg_id=tokenizer.seg_id, max_new_tokens=step.capacity, decode_step=step)


def test_compile_without_a_cpp_compiler_is_refused_by_name(monkeypatch, tmp_path):
    from lisa_ros.model.engine import LisaEngine

    monkeypatch.setenv("PATH", str(tmp_path))  # no c++, g++ nor clang++ on it
    with pytest.raises(ValueError, match="'compile'.*C\\+\\+ compiler"):
        LisaEngine.from_options({"device": "cpu", "precision": "fp32", "compile": True})
