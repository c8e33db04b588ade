"""SIGINT/SIGTERM as a flag (standard library only: installed before the seconds-long imports).

Nothing is raised into the running code: an exception raised by a handler inside a model
load was swallowed by the ``except Exception`` around it (and a KeyboardInterrupt during an
import by the importing library), and a second signal (``ros2 launch`` forwards one while the
terminal sends its own) raised again in the middle of the clean-up.
"""
from __future__ import annotations

import signal
import threading


class ExitSignals:
    """Sets ``requested`` on the first SIGINT/SIGTERM; later ones change nothing."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.name = ""

    def install(self) -> ExitSignals:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.name = self.name or signal.Signals(signum).name
        self.requested.set()

    @staticmethod
    def ignore_from_now_on() -> None:
        """Once clean-up is done: a late signal cannot turn the exit code 0 into a kill."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
