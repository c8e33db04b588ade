"""Instruction validation: refused with the reason, never truncated."""
import pytest

from lisa_ros.core.instruction import InstructionError, validate_instruction


@pytest.mark.parametrize("text,message", [
    ("", "empty"), ("   \n\t", "empty"), ("x" * 11, "max_instruction_chars = 10"),
    ("cup \ufffd", "not valid UTF-8"), (b"\xff\xfe", "not valid UTF-8"), ("a\x00b", "NUL"),
])
def test_bad_instructions_are_refused_with_the_reason(text, message):
    with pytest.raises(InstructionError, match=message):
        validate_instruction(text, max_chars=10)


def test_good_instruction_is_stripped():
    assert validate_instruction("  a cup  ", 10) == "a cup"
    assert validate_instruction("tasse à café".encode(), 20) == "tasse à café"


def test_lone_surrogates_are_refused():
    with pytest.raises(InstructionError, match="lone surrogate"):
        validate_instruction("cup \ud800")
