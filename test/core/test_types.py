"""Status: which statuses are model answers, and names for codes from elsewhere."""
from lisa_ros.core.types import Status


def test_only_ok_and_not_found_are_answers():
    assert {status for status in Status if status.answered} == {Status.OK, Status.NOT_FOUND}


def test_codes_and_names_from_messages_and_records_are_judged_without_raising():
    assert Status.is_answered(0) and Status.is_answered("NOT_FOUND")
    assert not Status.is_answered(Status.BUSY) and not Status.is_answered("TIMEOUT")
    assert not Status.is_answered(99) and not Status.is_answered("NO_RESULT")  # a newer node's code, a replay verdict
    assert Status.name_of(6) == "BUSY" and Status.name_of(99) == "99"
