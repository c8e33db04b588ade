"""Instruction text validation (no ROS): what the model may be asked."""
from __future__ import annotations

DEFAULT_MAX_CHARS = 2000


class InstructionError(ValueError):
    """The instruction cannot be used; the message says what to fix."""


def validate_instruction(text: str | bytes, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Return the instruction stripped of surrounding whitespace, or raise InstructionError.

    bytes are accepted so raw transport data can be checked for UTF-8 here too.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as error:
            raise InstructionError(
                f"instruction is not valid UTF-8 (byte {error.start}: {error.reason}); publish UTF-8 text"
            ) from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:  # lone surrogates: only a Python caller can pass them
        raise InstructionError(
            f"instruction is not valid UTF-8 (character {error.start} is a lone surrogate); pass proper text"
        ) from None
    if "\ufffd" in text:
        # rclpy decodes invalid UTF-8 on the wire to U+FFFD instead of failing.
        raise InstructionError(
            "instruction is not valid UTF-8 (it arrived with replacement characters U+FFFD); publish UTF-8 text"
        )
    stripped = text.strip()
    if not stripped:
        raise InstructionError("instruction is empty or only whitespace; say what to segment")
    if "\x00" in stripped:
        raise InstructionError("instruction contains a NUL character; publish plain text")
    if len(stripped) > max_chars:
        raise InstructionError(
            f"instruction has {len(stripped)} characters, more than max_instruction_chars = {max_chars}; "
            "shorten it or raise the parameter"
        )
    return stripped
