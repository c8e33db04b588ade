"""Instructions are bound to the newest frame recorded at or before them."""
import pytest

from lisa_ros.tools import schedule

FRAMES = [100, 200, 300, 400]


def test_bag_instructions_go_with_the_newest_earlier_frame():
    requests = schedule.bind_to_frames(FRAMES, [(250, "b"), (50, "early"), (400, "d"), (399, "c")])
    assert [(r.instruction, r.frame_index) for r in requests] == [("early", 0), ("b", 1), ("c", 2), ("d", 3)]
    assert [r.index for r in requests] == [0, 1, 2, 3]
    assert requests[0].time_ns == 100  # not before its frame


def test_every_nth_frame():
    assert [r.frame_index for r in schedule.every_nth_frame(FRAMES, "x", 3)] == [0, 3]
    with pytest.raises(ValueError, match="at least 1"):
        schedule.every_nth_frame(FRAMES, "x", 0)


def test_instruction_file(tmp_path):
    path = tmp_path / "instructions.txt"
    path.write_text("# seconds after the first frame\n0.15 segment the cup\n\n0 what can I drink from?\n")
    timed = schedule.read_instruction_file(path, start_ns=100)
    assert timed == [(100 + 150_000_000, "segment the cup"), (100, "what can I drink from?")]


@pytest.mark.parametrize("line, message", [("soon segment it", "expected 'SECONDS INSTRUCTION'"),
                                           ("1.5", "no instruction")])
def test_instruction_file_errors_name_the_line(tmp_path, line, message):
    path = tmp_path / "instructions.txt"
    path.write_text(f"0 fine\n{line}\n")
    with pytest.raises(ValueError, match=f"instructions.txt:2: {message}"):
        schedule.read_instruction_file(path, 0)
