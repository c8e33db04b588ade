"""The contract of lisa_ros.core.engine.Engine, run on every engine: the plumbing stand-in and LISA on a
tiny checkpoint (real transformers / segment_anything code, CPU fp32).

Each engine is an ``EngineCase``: how to build it, a request that must give masks, one that runs long
enough to be cancelled, and how to read which turn of its conversation an answer was. A new engine
adds a case; the tests below stay as they are.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from lisa_ros.core.engine import Engine, EngineError, create_engine
from lisa_ros.core.types import EngineOutput, Progress, Stage

FRAME = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)  # non-square: (H, W) not swapped


@dataclasses.dataclass
class EngineCase:
    make: Callable[[], Engine]  # built, not loaded
    # (engine, image, frame_key, conversation_id, **segment's other keywords): an answer with masks
    ask: Callable[..., EngineOutput]
    ask_nothing: Callable[..., EngineOutput]  # (engine, image, **segment's other keywords): an answer without
    ask_many: Callable[..., EngineOutput]  # (engine, image, **segment's other keywords): an answer with 5 masks
    slow: Callable[[Engine, np.ndarray], EngineOutput]  # a request that runs for seconds unless cancelled
    turn: Callable[[Engine, EngineOutput, str], int]  # which turn of its conversation the answer was


def _plumbing_case(_request) -> EngineCase:
    return EngineCase(
        make=lambda: create_engine("plumbing", {"hang_on": "hang", "hang_s": 30.0}),
        ask=lambda engine, image, key, conversation, **extra: engine.segment(
            image, "the cup and the plate", frame_key=key, conversation_id=conversation, **extra),
        ask_nothing=lambda engine, image, **extra: engine.segment(image, "nothing here", frame_key="none", **extra),
        ask_many=lambda engine, image, **extra: engine.segment(image, "a and b and c and d and e", frame_key="many",
                                                               **extra),
        slow=lambda engine, image: engine.segment(image, "hang", frame_key="slow"),
        turn=lambda engine, output, conversation: int(re.match(r"turn (\d+):", output.text).group(1)),
    )


def _lisa_case(request) -> EngineCase:
    pytest.importorskip("torch")
    checkpoint = request.getfixturevalue("tiny_lisa_checkpoint")  # untrained: answers are forced
    return EngineCase(
        make=lambda: create_engine("lisa", {"path": str(checkpoint), "device": "cpu", "precision": "fp32"}),
        ask=lambda engine, image, key, conversation, **extra: engine.segment(
            image, "segment the cup", frame_key=key, conversation_id=conversation, force_answer="Sure, [SEG].",
            **extra),
        ask_nothing=lambda engine, image, **extra: engine.segment(
            image, "is there a unicorn?", frame_key="none", force_answer="No, there is no unicorn.", **extra),
        ask_many=lambda engine, image, **extra: engine.segment(
            image, "segment the parts", frame_key="many", force_answer="Sure, " + "[SEG] " * 5, **extra),
        # max_new_tokens (512) forced tokens: tens of seconds on a CPU; cancel() is checked between tokens.
        slow=lambda engine, image: engine.segment(image, "describe", frame_key="slow", force_answer=[100] * 512),
        turn=lambda engine, output, conversation: len(engine.conversation(conversation)),
    )


CASES = {"plumbing": _plumbing_case, "lisa": _lisa_case}


@pytest.fixture(scope="module", params=list(CASES))
def case(request) -> EngineCase:
    return CASES[request.param](request)


@pytest.fixture(scope="module")
def loaded(case):
    """The case's engine, loaded once for the module (the unload test builds its own)."""
    engine = case.make()
    engine.load()
    yield engine
    engine.unload()


@pytest.fixture
def engine(loaded):
    """The loaded engine without conversations or frame caches left by another test."""
    loaded.reset()
    loaded.clear_caches()
    return loaded


def assert_well_formed(output: EngineOutput, height: int, width: int) -> None:
    assert output.masks, "this request must give masks"
    for mask in output.masks:
        assert isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == (height, width)
    assert len(output.scores) == len(output.masks)
    assert all(isinstance(score, float) and np.isfinite(score) for score in output.scores)
    assert isinstance(output.text, str)
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in output.timings_ms.items())


def test_unknown_engine_type_is_named():
    with pytest.raises(ValueError, match="'yolo'"):
        create_engine("yolo", {})


def test_masks_are_boolean_at_the_source_size_with_one_score_each(case, engine):
    assert_well_formed(case.ask(engine, FRAME, "f1", "default"), 48, 64)
    assert_well_formed(case.ask(engine, FRAME[:30, :40], "f2", "default"), 30, 40)
    # One key, another size (e.g. two unstamped frames): the masks follow the image, not a cache.
    assert_well_formed(case.ask(engine, FRAME[:20], "f1", "default"), 20, 64)
    assert all(isinstance(v, float) for v in engine.memory_stats().values())
    assert all(isinstance(v, float) for v in engine.load_stats().values())


def test_reset_forgets_one_conversation_or_all(case, engine):
    def turn(conversation: str) -> int:
        return case.turn(engine, case.ask(engine, FRAME, "f", conversation), conversation)

    assert (turn("a"), turn("a"), turn("b")) == (1, 2, 1)
    engine.reset("a")
    assert (turn("a"), turn("b")) == (1, 2)  # "b" kept its history
    engine.reset()
    assert (turn("a"), turn("b")) == (1, 1)


def test_cancel_ends_a_running_request_and_the_next_one_runs_normally(case, engine):
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(case.slow(engine, FRAME))
        except EngineError as error:
            outcome.append(error)

    started = time.monotonic()
    worker = threading.Thread(target=run)
    worker.start()
    # A cancel() that lands before the request starts is dropped by it: keep asking until it ends.
    while worker.is_alive():
        engine.cancel()
        worker.join(0.02)
    assert isinstance(outcome[0], EngineError), f"not cancelled: {outcome[0]!r}"
    assert time.monotonic() - started < 15  # the slow request alone takes longer (plumbing: 30 s)
    assert_well_formed(case.ask(engine, FRAME, "after", "default"), 48, 64)


def test_max_masks_keeps_the_highest_scoring_in_the_answers_order_and_counts_the_rest(case, engine):
    # One conversation each, the same prompt; the first call fills the frame's caches (LISA's prompt prefix,
    # a float rounding away from a full prefill), so the compared calls all reuse them.
    case.ask_many(engine, FRAME, conversation_id="warm")
    every = case.ask_many(engine, FRAME, conversation_id="all")
    assert len(every.masks) == 5 and every.masks_dropped == 0
    assert len(case.ask_many(engine, FRAME, conversation_id="five", max_masks=5).masks) == 5
    capped = case.ask_many(engine, FRAME, conversation_id="two", max_masks=2)
    assert_well_formed(capped, 48, 64)
    best = sorted(np.argsort(-np.asarray(every.scores), kind="stable")[:2])  # equal scores: the earliest
    assert capped.scores == [every.scores[i] for i in best] and capped.masks_dropped == 3
    assert all(np.array_equal(m, every.masks[i]) for m, i in zip(capped.masks, best, strict=True))
    assert capped.text == every.text


def assert_streamed(reports: list[Progress], output: EngineOutput) -> None:
    """GENERATING for tokens 1, 2, ..., n, its text growing as a prefix of the answer and all of it at n;
    then DECODING, once, when there are masks."""
    generating = [r for r in reports if r.stage is Stage.GENERATING]
    assert [r.tokens for r in generating] == list(range(1, len(generating) + 1)) and generating
    texts = [r.partial_text for r in generating]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts)), texts
    assert texts[-1] == output.text, texts
    assert [r.stage for r in reports] == [Stage.GENERATING] * len(generating) + [Stage.DECODING] * output.found


def test_progress_streams_the_answer_then_decoding_when_there_are_masks(case, engine):
    reports: list[Progress] = []
    found = case.ask(engine, FRAME, "p", "default", progress=reports.append)
    assert found.found
    assert_streamed(reports, found)
    reports.clear()
    nothing = case.ask_nothing(engine, FRAME, progress=reports.append)
    assert not nothing.found
    assert_streamed(reports, nothing)


def test_a_cancel_during_generation_stops_it_before_the_next_token(case, engine):
    reports: list[Progress] = []

    def cancel_at_the_second_token(progress: Progress) -> None:
        reports.append(progress)
        if progress.tokens == 2:
            engine.cancel()

    with pytest.raises(EngineError):
        case.ask(engine, FRAME, "c", "cancelled", progress=cancel_at_the_second_token)
    assert [r.tokens for r in reports] == [1, 2]
    assert case.turn(engine, case.ask(engine, FRAME, "c", "cancelled"), "cancelled") == 1  # no turn kept


def test_clear_caches_keeps_the_answers_and_the_conversations(case, engine):
    first = case.ask(engine, FRAME, "f", "a")  # computed from nothing cached
    engine.clear_caches()
    again = case.ask(engine, FRAME, "f", "b")  # computed from nothing cached again
    assert again.text == first.text and again.scores == pytest.approx(first.scores)
    assert all(np.array_equal(m, n) for m, n in zip(again.masks, first.masks, strict=True))
    assert case.turn(engine, case.ask(engine, FRAME, "f", "a"), "a") == 2


def test_unload_twice_refuses_requests_and_load_works_again(case):
    engine = case.make()
    with pytest.raises(EngineError):
        engine.segment(FRAME, "before load", frame_key="x")
    engine.load()
    assert_well_formed(case.ask(engine, FRAME, "x", "default"), 48, 64)
    engine.unload()
    engine.unload()  # cleanup after a failed or repeated deactivate: nothing left to free, no error
    with pytest.raises(EngineError):
        engine.segment(FRAME, "after unload", frame_key="x")
    engine.load()
    assert_well_formed(case.ask(engine, FRAME, "x", "default"), 48, 64)
    engine.unload()
