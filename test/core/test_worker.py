"""The request worker: pairing, bounded queue, timeouts, engine faults, exactly-once answers."""
import threading
import time

import numpy as np
import pytest
from worker_harness import WorkerHarness, harnesses

from lisa_ros.core.types import EngineOutput, PairingPolicy, Request, Stage, Status
from lisa_ros.core.worker import RequestWorker, WorkerSettings, drop_low_scores


class Harness(WorkerHarness):
    def __init__(self, engine_options=None, **settings):
        super().__init__(engine_options)
        self.settings = settings
        self.worker = self.new_worker()

    def new_worker(self):
        """A worker on the same engine and runner (what re-activating the node makes)."""
        return RequestWorker(self.engine, self.runner, self.frames, self.decode, self.on_answer,
                             WorkerSettings(**self.settings))

    def submit(self, text, **kwargs):
        request = Request(instruction=text, request_id=str(next(self.ids)), **kwargs)
        self.worker.submit(request)
        return request


@pytest.fixture
def harness():
    yield from harnesses(Harness)


def test_newest_frame_at_arrival_is_used(harness):
    h = harness()
    h.put(10)
    h.put(20)
    h.submit("cup")
    answer, = h.wait(1)
    assert answer.status is Status.OK and answer.frame.header == "h20" and answer.image[0, 0, 0] == 20
    assert h.frames.dropped_count == 1


def test_no_frame_and_stale_frame_are_explained(harness):
    h = harness(max_image_age=0.5)
    h.submit("cup")
    h.put(1, received=time.monotonic() - 5)
    h.submit("cup")
    no_image, stale = h.wait(2)
    assert no_image.status is Status.NO_IMAGE and "no image received yet" in no_image.message
    assert stale.status is Status.STALE_IMAGE and "max_image_age" in stale.message


def test_next_policy_waits_for_a_new_frame_or_times_out(harness):
    h = harness(pairing_policy=PairingPolicy.NEXT, next_frame_timeout=0.3)
    h.put(1)
    h.submit("cup")
    time.sleep(0.05)
    h.put(2)
    first, = h.wait(1)
    assert first.frame.header == "h2"
    h.submit("cup")
    _, second = h.wait(2)
    assert second.status is Status.NO_IMAGE and "next_frame_timeout" in second.message


def test_invalid_image_and_nothing_found(harness):
    h = harness()
    h.put("bad")
    h.submit("cup")
    h.put(5)
    h.submit("nothing here")
    bad, nothing = h.wait(2)
    assert bad.status is Status.INVALID_IMAGE and bad.message == "bad frame"
    assert nothing.status is Status.NOT_FOUND and nothing.output.masks == []


def test_flood_is_answered_busy_and_each_request_exactly_once(harness):
    h = harness({"delay_s": 0.2}, max_queue=2)
    h.put(1)
    requests = [h.submit(f"cup {i}") for i in range(8)]
    answers = h.wait(8)
    time.sleep(0.3)
    assert len(h.answers) == 8
    assert sorted(a.request.request_id for a in answers) == sorted(r.request_id for r in requests)
    statuses = [a.status for a in answers]
    assert statuses.count(Status.BUSY) >= 4 and statuses.count(Status.OK) >= 2
    assert all("max_queue" in a.message for a in answers if a.status is Status.BUSY)


def test_hung_call_times_out_once_is_cancelled_and_the_next_request_succeeds(harness):
    h = harness({"hang_on": "#hang", "hang_s": 5.0}, inference_timeout=0.3)
    h.put(1)
    h.submit("cup #hang")
    h.submit("cup after")
    timeout, after = h.wait(2, timeout=3)
    assert timeout.status is Status.TIMEOUT and "inference_timeout" in timeout.message
    assert after.status is Status.OK  # the engine honoured cancel()
    time.sleep(0.2)
    assert len(h.answers) == 2 and h.engine.cache_clears == 1


def test_uncancellable_hang_delays_later_requests_but_answers_each_once(harness):
    h = harness({"hang_on": "#hang", "hang_s": 1.0}, inference_timeout=0.3)
    h.engine.cancel = lambda: None  # an engine stuck where it cannot check for cancellation
    h.put(1)
    h.submit("cup #hang")
    h.submit("cup after")
    timeout, after = h.wait(2, timeout=5)
    assert timeout.status is Status.TIMEOUT
    assert after.status in (Status.OK, Status.TIMEOUT)  # waits behind the hung call
    deadline = time.monotonic() + 5
    while h.runner.busy_with_abandoned_call and time.monotonic() < deadline:
        time.sleep(0.01)
    h.submit("cup later")
    later = h.wait(3, timeout=5)[2]
    assert later.status is Status.OK
    assert len(h.answers) == 3  # the hung call finishing did not answer again
    assert h.engine.cache_clears >= 1


@pytest.mark.parametrize("word,status", [("#oom", Status.OUT_OF_MEMORY), ("#raise", Status.ENGINE_ERROR)])
def test_engine_faults_become_statuses(harness, word, status):
    h = harness({"oom_on": "#oom", "raise_on": "#raise"})
    h.put(1)
    h.submit(f"cup {word}")
    h.submit("cup")
    fault, ok = h.wait(2)
    assert fault.status is status and "injected" in fault.message
    assert ok.status is Status.OK
    if status is Status.OUT_OF_MEMORY:
        time.sleep(0.05)
        assert h.engine.cache_clears == 1


def test_stop_answers_pending_requests_not_ready(harness):
    h = harness({"delay_s": 0.5}, max_queue=5)
    h.put(1)
    for i in range(3):
        h.submit(f"cup {i}")
    time.sleep(0.1)
    started = time.monotonic()
    h.worker.stop("deactivated")
    assert time.monotonic() - started < 1.5
    statuses = [a.status for a in h.wait(3)]
    assert statuses == [Status.NOT_READY] * 3
    late = h.submit("too late")
    assert h.wait(4)[3].status is Status.NOT_READY and late.answered


def test_stop_cancels_the_running_call_so_the_next_worker_is_not_delayed(harness):
    """Deactivate used to leave the engine call running: the first request after re-activation waited
    behind it (up to the rest of a 30 s hang) and that wait was reported as its inference time."""
    h = harness({"hang_on": "#hang", "hang_s": 30.0})
    h.put(1)
    h.submit("cup #hang")
    deadline = time.monotonic() + 5
    while h.engine.segments_started < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert h.engine.segments_started == 1
    h.worker.stop("node deactivated")
    assert h.wait(1)[0].status is Status.NOT_READY
    h.worker = h.new_worker()
    h.submit("cup after")
    after = h.wait(2, timeout=5)[1]
    assert after.status is Status.OK
    assert after.queue_wait_ms < 1000 and after.inference_ms < 500, after


def test_queue_wait_includes_waiting_behind_a_busy_engine_and_inference_only_the_own_call(harness):
    h = harness()
    busy = threading.Event()

    def occupy_engine():  # e.g. a ~/reset service call, or a call that is not cancellable
        busy.set()
        time.sleep(0.5)

    blocker = threading.Thread(target=h.runner.call, args=(occupy_engine, None, threading.Event()))
    blocker.start()
    assert busy.wait(5)
    h.put(1)
    h.submit("cup")
    answer, = h.wait(1)
    blocker.join()
    assert answer.status is Status.OK
    assert answer.queue_wait_ms >= 300 and answer.inference_ms < 250, (answer.queue_wait_ms, answer.inference_ms)


def test_masks_beyond_max_masks_are_dropped_and_the_message_says_so(harness):
    """The engine drops them (max_masks is passed to it, so it never builds them); the worker names them."""
    h = harness(max_masks=4)
    h.put(1)
    h.submit(" and ".join(f"part {i}" for i in range(6)))
    h.submit("a and b")
    many, few = h.wait(2)
    assert many.status is Status.OK and len(many.output.masks) == len(many.output.scores) == 4
    assert many.output.masks_dropped == 2
    assert many.message.startswith("4 of 6 masks kept") and "max_masks = 4" in many.message
    assert few.message == "2 mask(s)"


def test_min_mask_score_is_off_by_default_and_at_zero():
    """0 = off: even a negative score (SAM's IoU prediction is not clipped) keeps its mask."""
    output = EngineOutput(masks=[np.ones((2, 2), bool)] * 2, scores=[-0.1, 0.05], text="it is [SEG] and [SEG]")
    assert WorkerSettings().min_mask_score == 0.0
    kept, below = drop_low_scores(output, 0.0)
    assert kept is output and below == []


def test_masks_below_min_mask_score_are_dropped_in_the_answers_order():
    first, second, third = (np.full((2, 2), value, bool) for value in (True, False, True))
    output = EngineOutput(masks=[first, second, third], scores=[0.9, 0.2, 0.5], text="[SEG] [SEG] [SEG]")
    kept, below = drop_low_scores(output, 0.5)  # a score equal to the threshold passes
    assert [id(mask) for mask in kept.masks] == [id(first), id(third)]
    assert kept.scores == [0.9, 0.5] and below == [0.2]
    assert kept.text == output.text and output.scores == [0.9, 0.2, 0.5]  # the engine's output is left whole
    assert drop_low_scores(output, 0.95)[1] == [0.9, 0.2, 0.5]


def test_an_answer_with_every_mask_below_min_mask_score_is_not_found_with_the_score_and_threshold(harness):
    h = harness(engine_options={"mask_score": 0.31}, min_mask_score=0.5)
    h.put(1)
    h.submit("cup and plate")
    answer, = h.wait(1)
    assert answer.status is Status.NOT_FOUND
    assert answer.message == "best mask score 0.31 is below min_mask_score 0.5: refused"
    assert answer.output.masks == [] and answer.output.scores == []
    assert answer.output.text.startswith("turn 1: 2 region(s) for 'cup and plate'")  # the model's own text


def test_scores_at_or_above_min_mask_score_are_kept_and_the_message_counts_the_dropped(harness):
    h = harness(min_mask_score=0.5)
    h.engine.segment = lambda image, text, **kw: EngineOutput(
        masks=[np.ones(image.shape[:2], bool)] * 3, scores=[0.8, 0.4999, 0.5], text="[SEG] [SEG] [SEG]")
    h.put(1)
    h.submit("cup")
    answer, = h.wait(1)
    assert answer.status is Status.OK and answer.output.scores == [0.8, 0.5]
    assert answer.message == "2 mask(s); 1 more scoring below min_mask_score 0.5 dropped (best 0.4999)"


def test_an_engine_that_ignores_max_masks_gives_an_engine_error(harness):
    """One place decides which masks are kept, the engine: more than max_masks breaks its contract."""
    h = harness(max_masks=2)
    h.engine.segment = lambda image, text, **kw: EngineOutput(
        masks=[np.zeros(image.shape[:2], bool)] * 3, scores=[1.0] * 3, text="x")
    h.put(1)
    h.submit("cup")
    answer, = h.wait(1)
    assert answer.status is Status.ENGINE_ERROR and "3 masks, more than max_masks = 2" in answer.message


def test_conversation_reset(harness):
    h = harness()
    h.put(1)
    h.submit("cup")
    h.submit("cup")
    h.submit("cup", reset_conversation=True)
    texts = [a.output.text.split(":")[0] for a in h.wait(3)]
    assert texts == ["turn 1", "turn 2", "turn 1"]


def test_preset_error_is_answered_without_the_engine(harness):
    h = harness()
    h.submit("", error=(Status.INVALID_INSTRUCTION, "empty"))
    answer, = h.wait(1)
    assert answer.status is Status.INVALID_INSTRUCTION and answer.inference_ms == 0


def test_unusable_engine_output_is_an_engine_error(harness):
    h = harness()
    h.engine.segment = lambda image, text, **kw: EngineOutput(masks=[np.zeros((2, 2), bool)], scores=[1.0], text="x")
    h.put(1)
    h.submit("cup")
    answer, = h.wait(1)
    assert answer.status is Status.ENGINE_ERROR and "mask 0 has shape (2, 2), the image is (4, 6)" in answer.message


def test_progress_follows_the_request_and_a_failing_callback_cannot_break_the_answer(harness, caplog):
    h = harness()
    h.put(1)
    stages = []

    def progress(report):
        stages.append(report.stage)
        raise RuntimeError("a feedback publisher that fails")

    with caplog.at_level("WARNING", logger="lisa_ros.core.worker"):
        h.submit("the cup", progress=progress)
        answer, = h.wait(1)
    assert answer.status is Status.OK, answer.message
    assert stages[-1] is Stage.DECODING and stages.count(Stage.ENCODING) == 1
    assert stages == sorted(stages) and Stage.GENERATING in stages  # QUEUED (if seen) < ENCODING < GENERATING
    assert "progress report failed: RuntimeError('a feedback publisher that fails')" in caplog.text


def test_a_refusal_without_a_worker_goes_through_the_same_exactly_once_guard(harness):
    """The node refuses with answer_request while no worker runs: a request answered there is never answered
    again by a worker, and vice versa."""
    import logging

    from lisa_ros.core.worker import answer_request

    h = harness()
    refused = Request(instruction="cup", request_id="r1")
    answer_request(refused, Status.NOT_READY, "node is inactive", h.on_answer, logging.getLogger("test"))
    h.put(1)
    h.worker.submit(refused)
    served = h.submit("cup")
    answer_request(served, Status.NOT_READY, "too late", h.on_answer, logging.getLogger("test"))
    first, second = h.wait(2)
    time.sleep(0.1)
    assert len(h.answers) == 2 and refused.answered and served.answered
    assert (first.request, first.status, first.message) == (refused, Status.NOT_READY, "node is inactive")
    assert second.request is served
