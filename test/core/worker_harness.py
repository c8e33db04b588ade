"""What the worker tests share: the plumbing engine on an engine thread, a frame slot, the answers received."""
import threading
import time

import numpy as np

from lisa_ros.core.engine_runner import EngineRunner
from lisa_ros.core.frames import Frame, LatestFrame
from lisa_ros.core.image import ImageError
from lisa_ros.core.plumbing_engine import PlumbingEngine


class WorkerHarness:
    """Subclasses set ``self.worker`` (on ``engine``, ``runner``, ``frames``, ``decode``, ``on_answer``)."""

    def __init__(self, engine_options=None):
        self.engine = PlumbingEngine.from_options(engine_options or {})
        self.engine.load()
        self.frames = LatestFrame()
        self.runner = EngineRunner()
        self.answers = []
        self.lock = threading.Condition()
        self.ids = iter(range(1, 10**6))
        self.worker = None

    @staticmethod
    def decode(frame):
        """A frame's payload is its pixel value; "bad" fails to decode."""
        if frame.payload == "bad":
            raise ImageError("bad frame")
        return np.full((4, 6, 3), frame.payload, np.uint8)

    def on_answer(self, answer):
        with self.lock:
            self.answers.append(answer)
            self.lock.notify_all()

    def put(self, value, received=None):
        return self.frames.put(Frame(payload=value, header=f"h{value}", key=value,
                                     received=time.monotonic() if received is None else received))

    def wait(self, count, timeout=10.0):
        """The first ``count`` answers, once they have come."""
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.answers) >= count, timeout), self.answers
        return self.answers[:count]

    def close(self):
        self.worker.stop("test over")
        self.runner.close()
        self.engine.unload()


def harnesses(harness_class):
    """The body of a fixture: yields a factory of ``harness_class`` and closes what it made."""
    made = []

    def make(engine_options=None, **settings):
        made.append(harness_class(engine_options, **settings))
        return made[-1]

    yield make
    for harness in made:
        harness.close()
