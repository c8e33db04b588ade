"""The queue both workers share: the exactly-once guard, queue positions, BUSY, stop."""
import dataclasses
import logging
import threading
import time

from lisa_ros.core.bounded_worker import BoundedQueueWorker, deliver_once
from lisa_ros.core.frames import Frame, LatestFrame
from lisa_ros.core.types import Status


@dataclasses.dataclass(eq=False)
class Item:
    request_id: str
    frame: Frame | None = None
    received: float = dataclasses.field(default_factory=time.monotonic)
    answered: bool = False
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)


@dataclasses.dataclass
class Settings:
    max_queue: int = 2
    max_image_age: float = 0.0
    image_topic: str = "image"


class GatedWorker(BoundedQueueWorker[Item]):
    """Finishes one item per ``release()`` (or stop cancels it); records positions and answers."""

    def __init__(self) -> None:
        self.releases = threading.Semaphore(0)
        self.answers: list[tuple[str, Status, str]] = []
        self.positions: list[tuple[str, int]] = []
        super().__init__(LatestFrame(), lambda frame: None, self.answers.append, Settings(), None, "test-queue")

    def submit(self, item: Item) -> None:
        if not self._refused_while_stopping(item):
            self._enqueue(item)

    def _process(self, item: Item) -> None:
        while not self.releases.acquire(timeout=0.01):
            if item.cancelled.is_set():
                return  # stop answers it
        self._deliver(item, (item.request_id, Status.OK, "done"))

    def _refuse(self, item: Item, status: Status, message: str, *, frame=None) -> None:
        self._deliver(item, (item.request_id, status, message))

    def _queued_at(self, item: Item, position: int) -> None:
        self.positions.append((item.request_id, position))


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_racing_answers_deliver_exactly_one():
    item, delivered = Item("1"), []
    start = threading.Barrier(8)

    def answer(n):
        start.wait()
        deliver_once(item, n, delivered.append, logging.getLogger("test"))

    threads = [threading.Thread(target=answer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(delivered) == 1 and item.answered


def test_a_failing_publisher_is_logged_and_the_item_stays_answered(caplog):
    item = Item("7")

    def broken(answer):
        raise RuntimeError("publisher gone")

    assert deliver_once(item, "answer", broken, logging.getLogger("test")) is True
    assert "request 7: publishing the answer failed" in caplog.text
    assert deliver_once(item, "again", broken, logging.getLogger("test")) is False


def test_positions_move_up_busy_beyond_max_queue_and_stop_answers_the_rest_once():
    worker = GatedWorker()
    try:
        running = Item("run")
        worker.submit(running)
        wait_until(lambda: worker.queue_depth == 1 and worker.waiting == 0)
        worker.submit(Item("a"))
        worker.submit(Item("b"))
        worker.submit(Item("c"))  # two are waiting: max_queue
        assert worker.answers[0][:2] == ("c", Status.BUSY) and "max_queue" in worker.answers[0][2]
        assert ("a", 1) in worker.positions and ("b", 2) in worker.positions
        worker.releases.release()
        wait_until(lambda: ("b", 1) in worker.positions)  # a runs now: b moved up
        assert worker.answers[1] == ("run", Status.OK, "done")
        worker.stop("deactivated")
        late = Item("late")
        worker.submit(late)
        statuses = {request_id: status for request_id, status, _ in worker.answers}
        assert len(worker.answers) == 5 and set(statuses) == {"run", "a", "b", "c", "late"}
        assert statuses["run"] is Status.OK and statuses["a"] is statuses["b"] is statuses["late"] is Status.NOT_READY
    finally:
        worker.stop("test over")
