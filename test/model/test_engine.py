"""Inference on the tiny checkpoint: KV cache vs the reference recomputation, masks per
[SEG], "not found", the per-frame cache, conversations, determinism.

Tests marked "forced" script the answer tokens (``force_answer``): the hidden states
and masks are still the model's own, but the token sequence is chosen by the test.
"""
from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest
import torch

from lisa_ros.core.engine import EngineError, InstructionTooLong
from lisa_ros.core.engine_runner import EngineRunner
from lisa_ros.core.frames import Frame, LatestFrame
from lisa_ros.core.types import Request, Stage, Status
from lisa_ros.core.worker import RequestWorker, WorkerSettings
from lisa_ros.model.frame_cache import FrameCache
from lisa_ros.model.generation import PromptPrefix, generate
from lisa_ros.model.preprocess import clip_pixels
from lisa_ros.model.reference import reference_generate, reference_segment
from lisa_ros.model.tokenization import build_prompt_ids


@pytest.mark.parametrize("forced", [None, "Sure, [SEG] and [SEG].", "Sorry, no."])
def test_kv_cache_equals_reference_recomputation(engine, frame, forced):
    """Same tokens, [SEG] states, masks and text as re-running the full sequence (and CLIP)
    every step; ``forced=None`` is the model's own greedy answer."""
    model, tokenizer = engine.model, engine.tokenizer
    instruction = "Please segment the cup and the saucer."
    forced_ids = None if forced is None else tokenizer.encode_with_added_tokens(forced) + [tokenizer.eos_id]
    prompt = build_prompt_ids(tokenizer, instruction)
    pixels = clip_pixels(frame)
    cached = generate(model, prompt, model.clip_features(pixels), eos_id=tokenizer.eos_id, seg_id=tokenizer.seg_id,
                      max_new_tokens=40, forced_ids=forced_ids)
    full = reference_generate(model, prompt, pixels, eos_id=tokenizer.eos_id, seg_id=tokenizer.seg_id,
                              max_new_tokens=40, forced_ids=forced_ids)
    assert cached.token_ids == full.token_ids
    assert cached.seg_hidden.shape == full.seg_hidden.shape
    torch.testing.assert_close(cached.seg_hidden, full.seg_hidden, atol=1e-4, rtol=1e-4)

    reference = reference_segment(model, tokenizer, frame, instruction, max_new_tokens=40, forced_ids=forced_ids)
    out = engine.segment(frame, instruction, frame_key="kv", force_answer=forced_ids)
    assert out.text == reference.text
    assert len(out.masks) == len(reference.masks)
    for mask, expected in zip(out.masks, reference.masks):
        assert (mask == expected).mean() > 0.9999  # equal up to pixels with |logit| ~ 1e-6
    np.testing.assert_allclose(out.scores, reference.scores.numpy(), atol=1e-4)


def test_several_seg_give_several_masks(engine, frame):  # forced
    out = engine.segment(frame, "Segment the three cups.", frame_key="multi",
                         force_answer="Sure, [SEG], [SEG] and [SEG].")
    assert out.found and len(out.masks) == len(out.scores) == 3
    for mask in out.masks:
        assert mask.dtype == bool and mask.shape == frame.shape[:2]
    assert all(np.isfinite(out.scores))
    assert "[SEG]" not in out.text and "</s>" not in out.text


def test_max_masks_ranks_at_low_resolution_and_upsamples_only_the_kept(engine, frame, monkeypatch):  # forced
    """334 [SEG] at 1080p were upsampled at once (~2.8 GB of fp32 logits) before the worker kept 16: the
    engine keeps the best by SAM's IoU prediction first, and upsamples (interpolate) only those."""
    from lisa_ros.model.modeling import MASK_DECODE_BATCH

    batches = []
    interpolate = torch.nn.functional.interpolate

    def counting_interpolate(tensor, *args, **kwargs):
        batches.append(tensor.shape[0])
        return interpolate(tensor, *args, **kwargs)

    answer = "Sure, " + "[SEG] " * 40
    # The first call on the frame fills its caches (the prompt prefix: a float rounding away from a full
    # prefill); the compared calls, one conversation each, reuse them.
    engine.segment(frame, "Segment every part.", frame_key="many", conversation_id="warm", force_answer=answer)
    monkeypatch.setattr(torch.nn.functional, "interpolate", counting_interpolate)
    every = engine.segment(frame, "Segment every part.", frame_key="many", conversation_id="all", force_answer=answer)
    assert len(every.masks) == 40 and every.masks_dropped == 0 and len(set(every.scores)) == 40
    assert max(batches) <= MASK_DECODE_BATCH  # uncapped, still upsampled in bounded chunks
    batches.clear()
    capped = engine.segment(frame, "Segment every part.", frame_key="many", conversation_id="three",
                            force_answer=answer, max_masks=3)
    best = sorted(np.argsort(-np.asarray(every.scores), kind="stable")[:3])
    assert capped.scores == [every.scores[i] for i in best] and capped.masks_dropped == 37
    assert all(np.array_equal(m, every.masks[i]) for m, i in zip(capped.masks, best, strict=True))
    assert batches and max(batches) == 3  # the frame was cached: every interpolate was the kept masks'


def test_no_seg_is_not_found_with_the_text(engine, frame):  # forced
    out = engine.segment(frame, "Is there a unicorn?", frame_key="none", force_answer="No, there is no unicorn.")
    assert not out.found and out.masks == [] and out.scores == []
    assert out.text == "No, there is no unicorn."
    assert "mask_decode" not in out.timings_ms


def test_trained_tiny_answers_like_lisa(engine, frame):
    """Unforced: the tiny checkpoint's LLM was trained for demos."""
    out = engine.segment(frame, "Please segment the cup.", frame_key="demo")
    assert out.found and len(out.masks) == 1 and out.text == "Sure."
    refusal = engine.segment(frame, "Hello!", frame_key="demo")
    assert not refusal.found and refusal.text.startswith("Sorry")


@pytest.mark.parametrize("instruction", ["Please segment the cup.", "Hello!"])
def test_progress_reports_every_generated_token_and_the_answer_as_it_grows(engine, frame, instruction):
    """Unforced: one GENERATING per generated token (the EOS too), the text without special tokens (never
    "Sure," before "Sure."), then DECODING only before masks."""
    reports = []
    out = engine.segment(frame, instruction, frame_key="stream", conversation_id="stream", progress=reports.append)
    answer_ids = engine.conversation("stream")[-1].answer_ids
    generating = [r for r in reports if r.stage is Stage.GENERATING]
    assert [r.tokens for r in generating] == list(range(1, len(answer_ids) + 2))  # + the EOS
    assert [r.partial_text for r in generating][-1] == out.text
    assert all(out.text.startswith(r.partial_text) and "[SEG]" not in r.partial_text and "<" not in r.partial_text
               for r in generating)
    assert [r.stage for r in reports[len(generating):]] == ([Stage.DECODING] if out.found else [])


def test_progress_text_is_decoded_only_when_read(engine, frame, monkeypatch):
    """The action's throttle sends a few GENERATING reports a second: tokens it never reads cost no decode."""
    decoded = []
    decode_prefix = engine.tokenizer.decode_prefix
    monkeypatch.setattr(engine.tokenizer, "decode_prefix", lambda ids: decoded.append(len(ids)) or decode_prefix(ids))
    reports = []
    out = engine.segment(frame, "Hello!", frame_key="lazy", force_answer="Sorry, I can not see that here.",
                         progress=reports.append)
    generating = [r for r in reports if r.stage is Stage.GENERATING]
    assert len(generating) > 3 and decoded == []
    assert generating[1].partial_text == generating[1].partial_text and decoded == [2]  # decoded once, kept
    assert generating[-1].partial_text == out.text


def test_embedding_cache_hit_for_second_instruction(engine, frame):
    first = engine.segment(frame, "Segment the cup.", frame_key=("cache", 1), force_answer="Sure, [SEG].")
    second = engine.segment(frame, "Segment the dog.", frame_key=("cache", 1), force_answer="It is [SEG].")
    assert first.timings_ms["sam_encoder"] > 0 and first.timings_ms["clip"] > 0
    assert second.timings_ms["sam_encoder"] == 0 and second.timings_ms["clip"] == 0
    for phase in ("preprocess", "prefill", "decode", "generate", "mask_decode", "total"):
        assert phase in second.timings_ms


def test_same_key_with_other_pixels_is_computed_afresh(make_engine, tiny_7b, engine, frame, caplog):  # forced
    """Two images under one key (an edited image resent with its header, a constant camera clock) must
    never share CLIP features, SAM's embedding or the prompt prefix: the answer equals a fresh engine's."""
    other = np.random.default_rng(1).integers(0, 256, frame.shape, dtype=np.uint8)
    ask = dict(frame_key=("collide", 1), force_answer="Sure, [SEG].")
    first = engine.segment(frame, "Segment the cup.", conversation_id="c", **ask)
    with caplog.at_level("DEBUG", logger="lisa_ros.model.engine"):
        same = engine.segment(frame.copy(), "Segment the cup.", conversation_id="c", **ask)
        assert "new frame" not in caplog.text  # same pixels, another array: the same frame
        second = engine.segment(other, "Segment the cup.", conversation_id="c2", **ask)
        engine.segment(other, "Segment the cup.", conversation_id="c", **ask)
        assert "'c': new frame" in caplog.text  # the conversation saw its frame change
    assert same.timings_ms["clip"] == 0 and same.timings_ms["sam_encoder"] == 0  # a real cache hit
    assert second.timings_ms["clip"] > 0 and second.timings_ms["sam_encoder"] > 0

    fresh_engine = make_engine(tiny_7b.lisa_dir)
    try:
        fresh = fresh_engine.segment(other, "Segment the cup.", frame_key="anything", force_answer="Sure, [SEG].")
    finally:
        fresh_engine.unload()
    assert fresh.scores != first.scores  # the test can tell the two frames apart
    assert second.scores == fresh.scores and (second.masks[0] == fresh.masks[0]).all()
    assert engine.frame_cache[("collide", 1)].image is not other  # the cache holds its own copy


def test_a_reused_buffer_under_one_key_is_a_new_frame(engine, frame):  # forced
    """A caller that writes each new image into the same array cannot change a cached frame."""
    other = np.ascontiguousarray(frame[::-1])
    buffer = frame.copy()
    ask = dict(frame_key="buffer", force_answer="Sure, [SEG].")
    engine.segment(buffer, "Segment the cup.", conversation_id="b1", **ask)
    buffer[:] = other
    again = engine.segment(buffer, "Segment the cup.", conversation_id="b2", **ask)
    expected = engine.segment(other, "Segment the cup.", frame_key="buffer-reference", conversation_id="b3",
                              force_answer="Sure, [SEG].")
    assert again.timings_ms["clip"] > 0 and again.scores == expected.scores


@pytest.mark.parametrize("forced", [None, "It is [SEG] and [SEG]."])
def test_prompt_prefix_cache_gives_the_answer_of_a_full_prefill(engine, frame, forced):
    """A second prompt on the same image features prefills only what follows the image."""
    model, tokenizer = engine.model, engine.tokenizer
    features = model.clip_features(clip_pixels(frame))
    forced_ids = None if forced is None else tokenizer.encode_with_added_tokens(forced) + [tokenizer.eos_id]
    common = dict(eos_id=tokenizer.eos_id, seg_id=tokenizer.seg_id, max_new_tokens=24, forced_ids=forced_ids)
    assert generate(model, build_prompt_ids(tokenizer, "Segment the cup."), features, **common).prefix is None
    first = generate(model, build_prompt_ids(tokenizer, "Segment the cup."), features, keep_prefix=True, **common)
    assert first.prefix is not None and not first.prefix_reused
    prompt = build_prompt_ids(tokenizer, "Please segment the saucer and the spoon.")
    assert prompt[:len(first.prefix.ids)] == list(first.prefix.ids) and len(prompt) > len(first.prefix.ids)

    reused = generate(model, prompt, features, prefix=first.prefix, **common)
    full = generate(model, prompt, features, **common)
    assert reused.prefix_reused and reused.prefix is first.prefix and not full.prefix_reused
    assert reused.token_ids == full.token_ids
    assert reused.seg_hidden.shape == full.seg_hidden.shape
    torch.testing.assert_close(reused.seg_hidden, full.seg_hidden, atol=1e-5, rtol=1e-5)
    # The prefix is a snapshot: using it did not extend it, so it serves a third prompt alike.
    again = generate(model, prompt, features, prefix=first.prefix, **common)
    assert again.token_ids == reused.token_ids
    torch.testing.assert_close(again.seg_hidden, reused.seg_hidden, atol=0, rtol=0)
    # A prefix whose ids the prompt does not start with is not used.
    foreign = PromptPrefix(tuple(first.prefix.ids[1:]), first.prefix.cache)
    assert not generate(model, prompt, features, prefix=foreign, **common).prefix_reused


def test_second_instruction_on_a_frame_reuses_the_prompt_prefix(engine, frame):
    instruction = "Segment the saucer."
    engine.segment(frame, "Segment the cup.", frame_key="prefix", conversation_id="p1", force_answer="Sure, [SEG].")
    assert engine.frame_cache["prefix"].prompt_prefix is not None
    second = engine.segment(frame, instruction, frame_key="prefix", conversation_id="p2", force_answer="It is [SEG].")
    fresh = engine.segment(frame, instruction, frame_key="prefix-fresh", conversation_id="p3",
                           force_answer="It is [SEG].")
    assert second.text == fresh.text and len(second.masks) == len(fresh.masks) == 1
    assert (second.masks[0] == fresh.masks[0]).mean() > 0.9999
    np.testing.assert_allclose(second.scores, fresh.scores, atol=1e-4)
    # Only the latest frame keeps a prefix cache (memory stays bounded by one).
    assert engine.frame_cache["prefix"].prompt_prefix is None
    assert engine.frame_cache["prefix-fresh"].prompt_prefix is not None


def test_sam_on_its_own_thread_gives_the_deferred_result(make_engine, tiny_7b, frame):
    """The CUDA set-up (SAM's preprocessing and encoder on a worker thread while the LLM runs)
    exercised on the CPU: same masks and scores as the CPU's deferred SAM."""
    deferred = make_engine(tiny_7b.lisa_dir, max_history_turns=0)
    threaded = make_engine(tiny_7b.lisa_dir, max_history_turns=0)
    threaded.frame_cache.close()
    threaded.frame_cache = FrameCache(threaded.model, size=threaded.options.frame_cache_size,  # as load() on CUDA
                                      clip_preprocess=threaded.options.clip_preprocess, sam_on_thread=True)
    try:
        none = threaded.segment(frame, "Hello!", frame_key="t", force_answer="Hi.")
        assert not none.found and threaded.frame_cache["t"].sam_future is not None  # started, not waited for
        deferred.segment(frame, "Hello!", frame_key="t", force_answer="Hi.")  # same calls: same prompt-prefix reuse
        deferred_frame = deferred.frame_cache["t"]
        assert deferred_frame.sam_future is None and deferred_frame.sam_input_size is None  # SAM not started
        a = deferred.segment(frame, "Segment the cup.", frame_key="t", force_answer="Sure, [SEG].")
        b = threaded.segment(frame, "Segment the cup.", frame_key="t", force_answer="Sure, [SEG].")
        assert threaded.frame_cache["t"].sam_future is None and threaded.frame_cache["t"].sam_input_size is not None
        assert b.timings_ms["sam_encoder"] > 0 and b.timings_ms["preprocess"] == 0  # the frame's work was cached
        assert len(a.masks) == len(b.masks) == 1 and (a.masks[0] == b.masks[0]).all() and a.scores == b.scores
    finally:
        threaded.unload()
        deferred.unload()


def test_frame_cache_size_zero_recomputes(make_engine, tiny_7b, frame):
    engine = make_engine(tiny_7b.lisa_dir, frame_cache_size=0, max_history_turns=0)
    outs = [engine.segment(frame, "Segment the cup.", frame_key=1, force_answer="Sure, [SEG].") for _ in range(2)]
    assert all(o.timings_ms["sam_encoder"] > 0 for o in outs)
    assert (outs[0].masks[0] == outs[1].masks[0]).all() and outs[0].scores == outs[1].scores
    assert engine.conversation() == []  # stateless


def test_deterministic_across_loads(make_engine, tiny_7b, engine, frame):
    again = make_engine(tiny_7b.lisa_dir)
    a = engine.segment(frame, "Please segment the cup.", frame_key="det")
    b = again.segment(frame, "Please segment the cup.", frame_key="det")
    assert a.text == b.text and a.scores == b.scores
    assert all((x == y).all() for x, y in zip(a.masks, b.masks))


def test_tiny_checkpoint_deterministic_by_seed(tmp_path):
    from lisa_ros.model.checkpoint import find_weight_files, read_tensors
    from lisa_ros.model.tiny import write_tiny_checkpoint

    written = [write_tiny_checkpoint(tmp_path / str(i), seed=3, train_steps=2) for i in range(2)]
    tensors = [{k: v for f in find_weight_files(w.lisa_dir).files for k, v in read_tensors(f)} for w in written]
    assert tensors[0].keys() == tensors[1].keys()
    assert all(torch.equal(tensors[0][k], tensors[1][k]) for k in tensors[0])
    for name in ("tokenizer.model", "config.json", "added_tokens.json"):
        assert (written[0].lisa_dir / name).read_bytes() == (written[1].lisa_dir / name).read_bytes()


def test_max_new_tokens_stops_generation(make_engine, tiny_7b, frame):
    engine = make_engine(tiny_7b.lisa_dir, max_new_tokens=3)
    out = engine.segment(frame, "Segment the cup.", frame_key=1, force_answer="Sure, it is the cup [SEG].")
    assert not out.found and len(engine.conversation()[-1].answer_ids) == 3


def test_instruction_longer_than_context_is_refused(engine, frame):
    with pytest.raises(InstructionTooLong, match="too long"):
        engine.segment(frame, "cup " * 2000, frame_key="long")


def test_too_long_in_tokens_names_the_limit_and_the_limit_is_exact(engine, frame):
    """700 CJK characters pass the node's character limit but not the context (3 byte tokens each here)."""
    with pytest.raises(InstructionTooLong) as refused:
        engine.segment(frame, "杯" * 700, frame_key="cjk")
    found = re.search(r"too long: (\d+) tokens, at most (\d+) fit", str(refused.value))
    assert found, str(refused.value)
    tokens, limit = map(int, found.groups())
    assert tokens == len(engine.tokenizer.encode_text("杯" * 700)) and tokens > limit
    fitting = (limit - 1) // 3  # "▁" then 3 byte tokens per character: the longest that fits
    assert len(engine.tokenizer.encode_text("杯" * fitting)) <= limit < len(engine.tokenizer.encode_text(
        "杯" * (fitting + 1)))
    assert engine.segment(frame, "杯" * fitting, frame_key="cjk", force_answer="Sure, [SEG].").found
    with pytest.raises(InstructionTooLong):
        engine.segment(frame, "杯" * (fitting + 1), frame_key="cjk")


def test_worker_answers_too_long_instructions_invalid_instruction(engine, frame):
    """Through the node's request worker: the request's fault (INVALID_INSTRUCTION), not ENGINE_ERROR."""
    answers, arrived = [], threading.Condition()

    def on_answer(answer):
        with arrived:
            answers.append(answer)
            arrived.notify_all()

    runner = EngineRunner()
    worker = RequestWorker(engine, runner, LatestFrame(), lambda f: f.payload, on_answer, WorkerSettings())
    try:
        for text in ("杯" * 700, "Segment the cup."):
            worker.submit(Request(instruction=text, request_id=text[:3],
                                  frame=Frame(payload=frame, header=None, key="worker", received=time.monotonic())))
        with arrived:
            assert arrived.wait_for(lambda: len(answers) == 2, timeout=60), answers
    finally:
        worker.stop("test over")
        runner.close()
    too_long, fine = answers
    assert too_long.status is Status.INVALID_INSTRUCTION, too_long.message
    assert re.search(r"too long: \d+ tokens, at most \d+ fit", too_long.message)
    assert fine.status in (Status.OK, Status.NOT_FOUND)


def test_bad_image_is_refused(engine):
    with pytest.raises(EngineError, match="uint8"):
        engine.segment(np.zeros((8, 8), np.uint8), "x", frame_key="bad")


def test_conversation_history_and_reset(engine, frame):  # forced
    other = np.ascontiguousarray(frame[::-1])
    engine.segment(frame, "Segment the cup.", frame_key="t1", conversation_id="a", force_answer="Sure, [SEG].")
    engine.segment(frame, "Hello!", frame_key="t1", conversation_id="b", force_answer="Hi.")
    second = engine.segment(other, "And the saucer?", frame_key="t2", conversation_id="a", force_answer="It is [SEG].")
    turns = engine.conversation("a")
    assert [t.instruction for t in turns] == ["Segment the cup.", "And the saucer?"]  # kept across the frame change
    assert second.found
    # The second turn's prompt replays the first answer (its [SEG] included) before the new instruction.
    prompt = build_prompt_ids(engine.tokenizer, "Next?", turns)
    assert prompt.count(engine.tokenizer.seg_id) == 2 and prompt.count(engine.tokenizer.eos_id) == 2
    engine.reset("a")
    assert engine.conversation("a") == [] and len(engine.conversation("b")) == 1
    engine.reset()
    assert engine.conversation("b") == []


def test_history_changes_the_answer_context(engine, frame):  # forced
    """With history the [SEG] state differs from a fresh conversation's (the prompt differs)."""
    engine.segment(frame, "Segment the cup.", frame_key="h", conversation_id="h", force_answer="Sure, [SEG].")
    with_history = engine.segment(frame, "Segment the cup.", frame_key="h", conversation_id="h",
                                  force_answer="Sure, [SEG].")
    fresh = engine.segment(frame, "Segment the cup.", frame_key="h", conversation_id="fresh",
                           force_answer="Sure, [SEG].")
    assert with_history.scores != fresh.scores


def test_history_is_bounded(make_engine, tiny_7b, frame):
    engine = make_engine(tiny_7b.lisa_dir, max_history_turns=2)
    for i in range(4):
        engine.segment(frame, f"Segment object {i}.", frame_key=1, force_answer="Sure, [SEG].")
    assert [t.instruction for t in engine.conversation()] == ["Segment object 2.", "Segment object 3."]


def test_out_of_memory_clears_caches(engine, frame, monkeypatch):
    from lisa_ros.core.engine import EngineOutOfMemory
    from lisa_ros.model import engine as engine_module

    engine.segment(frame, "Segment the cup.", frame_key="oom", force_answer="Sure, [SEG].")
    assert "oom" in engine.frame_cache

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(engine_module, "generate", out_of_memory)
    with pytest.raises(EngineOutOfMemory, match="Caches cleared"):
        engine.segment(frame, "Segment the cup.", frame_key="oom")
    assert not engine.frame_cache


def test_cancel_ends_a_long_generation_and_the_next_call_runs(engine, frame):
    """The node calls cancel() from its worker thread when a call overruns inference_timeout.

    Uncancelled, this answer ends at max_new_tokens (512) in under a second, and a cancel that lands
    before a call starts is dropped by design; so the first token's progress report is held until the
    cancel from the other thread has landed: it always meets a running generation, which ends there.
    """
    first_token, cancel_sent, reports = threading.Event(), threading.Event(), []

    def hold_the_first_token(progress):
        reports.append(progress)
        if progress.tokens == 1:
            first_token.set()
            assert cancel_sent.wait(120), "the cancelling thread never cancelled"

    def cancel_once_generating():
        if first_token.wait(120):
            engine.cancel()
            cancel_sent.set()

    canceller = threading.Thread(target=cancel_once_generating)
    canceller.start()
    with pytest.raises(EngineError, match="cancelled"):
        engine.segment(frame, "Segment the cup.", frame_key="cancel", force_answer=[100] * 5000,
                       progress=hold_the_first_token)
    canceller.join()
    assert [(r.stage, r.tokens) for r in reports] == [(Stage.GENERATING, 1)]  # not one token more
    assert engine.segment(frame, "Segment the cup.", frame_key="cancel", force_answer="Sure, [SEG].").found
