"""Which instruction goes with which frame of a replayed bag.

Instructions come from the bag's own instruction topic, from a file of
"SECONDS INSTRUCTION" lines (seconds after the first frame), or from the command
line applied to every Nth frame. Each one is bound to the newest frame recorded at
or before its time (the frame a live node would have had), so lock-step replay can
send exactly that frame before the instruction.
"""
from __future__ import annotations

import bisect
import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class ScheduledInstruction:
    index: int
    frame_index: int
    instruction: str
    time_ns: int  # bag time at which the instruction is sent


def bind_to_frames(frame_times_ns: list[int], timed_instructions: list[tuple[int, str]]) -> list[ScheduledInstruction]:
    """Requests for (bag time ns, instruction) pairs; instructions before the first frame go with it."""
    if not frame_times_ns:
        return []
    requests = []
    for time_ns, text in sorted(timed_instructions, key=lambda pair: pair[0]):
        frame = max(bisect.bisect_right(frame_times_ns, time_ns) - 1, 0)
        requests.append(ScheduledInstruction(len(requests), frame, text, max(time_ns, frame_times_ns[frame])))
    return requests


def every_nth_frame(frame_times_ns: list[int], instruction: str, every: int) -> list[ScheduledInstruction]:
    if every < 1:
        raise ValueError(f"--every must be at least 1, not {every}")
    return [
        ScheduledInstruction(n, frame, instruction, frame_times_ns[frame])
        for n, frame in enumerate(range(0, len(frame_times_ns), every))
    ]


def read_instruction_file(path: str | Path, start_ns: int) -> list[tuple[int, str]]:
    """Parse "SECONDS INSTRUCTION" lines ('#' starts a comment); ValueError names the bad line."""
    timed = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        seconds, _, text = line.partition(" ")
        try:
            offset_ns = round(float(seconds) * 1e9)
        except ValueError:
            raise ValueError(f"{path}:{number}: expected 'SECONDS INSTRUCTION', got {line!r}") from None
        if not text.strip():
            raise ValueError(f"{path}:{number}: no instruction after the time")
        timed.append((start_ns + offset_ns, text.strip()))
    return timed
