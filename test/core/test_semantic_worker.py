"""The semantic worker on the plumbing segmenter: bounded queue, periodic ticks, stop, exactly-once answers."""
import time

import pytest
from worker_harness import WorkerHarness, harnesses

from lisa_ros.core.plumbing_engine import PlumbingSemanticSegmenter
from lisa_ros.core.semantic import SemanticOptions
from lisa_ros.core.semantic_worker import SemanticJob, SemanticSettings, SemanticWorker
from lisa_ros.core.types import Status


class Harness(WorkerHarness):
    def __init__(self, engine_options=None, **settings):
        super().__init__(engine_options)
        self.worker = SemanticWorker(PlumbingSemanticSegmenter(self.engine, SemanticOptions()), self.runner,
                                     self.frames, self.decode, self.on_answer,
                                     SemanticSettings(**{"categories": ("floor", "door")} | settings))

    def submit(self, **kwargs):
        """(the job, whether submit took it)"""
        job = SemanticJob(request_id=str(next(self.ids)), **kwargs)
        return job, self.worker.submit(job)


@pytest.fixture
def harness():
    yield from harnesses(Harness)


def test_configured_or_requested_categories_label_the_newest_frame(harness):
    h = harness()
    h.put(1)
    h.put(2)
    h.submit()
    h.submit(categories=["cup", "nothing"])
    configured, requested = h.wait(2)
    assert configured.result.status is Status.OK and configured.result.label_names == ["floor", "door"]
    assert configured.frame.header == "h2" and configured.image.shape == (4, 6, 3)
    assert requested.result.label_names == ["cup", "nothing"] and requested.result.filtered_out == ["nothing"]


def test_refusals_before_queueing_say_why(harness):
    h = harness(categories=(), max_image_age=0.5)
    h.submit(categories=["floor"])
    h.submit()
    h.put(1, received=time.monotonic() - 5)
    h.submit(categories=["floor"])
    no_image, no_categories, stale = h.wait(3)
    assert no_image.result.status is Status.NO_IMAGE and "no image received yet" in no_image.result.message
    assert no_categories.result.status is Status.INVALID_INSTRUCTION and "no categories" in no_categories.result.message
    assert stale.result.status is Status.STALE_IMAGE and "max_image_age" in stale.result.message


def test_invalid_image_is_answered_and_the_next_job_runs(harness):
    h = harness()
    h.put("bad")
    h.submit()
    h.put(3)
    h.submit()
    bad, good = h.wait(2)
    assert bad.result.status is Status.INVALID_IMAGE and bad.result.message == "bad frame"
    assert good.result.status is Status.OK


def test_flood_is_answered_busy_and_each_job_exactly_once(harness):
    h = harness({"delay_s": 0.2}, max_queue=2)
    h.put(1)
    jobs = [h.submit()[0] for _ in range(8)]
    answers = h.wait(8)
    time.sleep(0.3)
    assert len(h.answers) == 8
    assert sorted(a.job.request_id for a in answers) == sorted(j.request_id for j in jobs)
    statuses = [a.result.status for a in answers]
    assert statuses.count(Status.BUSY) >= 4 and statuses.count(Status.OK) >= 2
    assert all("max_queue" in a.result.message for a in answers if a.result.status is Status.BUSY)


def test_a_periodic_tick_is_skipped_while_the_previous_one_waits_or_runs(harness):
    h = harness({"delay_s": 0.3})
    h.put(1)
    _, first = h.submit(periodic=True)
    _, second = h.submit(periodic=True)
    assert first and not second
    h.wait(1)
    time.sleep(0.05)
    _, third = h.submit(periodic=True)
    assert third and len(h.wait(2)) == 2


def test_hung_segmenter_times_out_once_and_the_next_job_succeeds(harness):
    h = harness({"hang_on": "#hang", "hang_s": 5.0}, inference_timeout=0.3)
    h.put(1)
    h.submit(categories=["cup #hang"])
    h.submit()
    timeout, after = h.wait(2, timeout=3)
    assert timeout.result.status is Status.TIMEOUT and "inference_timeout" in timeout.result.message
    assert after.result.status is Status.OK
    time.sleep(0.2)
    assert len(h.answers) == 2


def test_stop_answers_pending_and_running_jobs_not_ready_once_and_later_ones_too(harness):
    h = harness({"hang_on": "#hang", "hang_s": 30.0}, max_queue=5)
    h.put(1)
    h.submit(categories=["cup #hang"])
    deadline = time.monotonic() + 5
    while h.engine.segments_started < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    queued = [h.submit()[0] for _ in range(2)]
    started = time.monotonic()
    h.worker.stop("deactivated")
    assert time.monotonic() - started < 1.5
    answers = h.wait(3)
    assert [a.result.status for a in answers] == [Status.NOT_READY] * 3
    assert all("deactivated; request not processed" == a.result.message for a in answers)
    assert all(job.answered for job in queued)
    late, _ = h.submit()
    assert h.wait(4)[3].result.status is Status.NOT_READY and late.answered
    time.sleep(0.2)
    assert len(h.answers) == 4
