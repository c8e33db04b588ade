"""What a request refused in each node state is told: advice that can work in that state."""
import pytest

from lisa_ros.core.lifecycle import NodeState, not_ready_message


@pytest.mark.parametrize("state", list(NodeState))
def test_every_state_has_advice_without_a_doubled_word(state):
    message = not_ready_message(state)
    assert message.startswith("node is") or message.startswith("node was")
    words = message.replace(";", " ").split()
    assert all(a != b for a, b in zip(words, words[1:])), message


@pytest.mark.parametrize("state", [NodeState.FINALIZED, NodeState.EXITING])
def test_a_node_that_cannot_answer_again_is_never_told_to_activate(state):
    message = not_ready_message(state)
    assert "activate" not in message and "restart lisa_node" in message


def test_a_failed_configure_is_named_with_the_advice():
    message = not_ready_message(NodeState.UNCONFIGURED, "configure failed: no weights at /x")
    assert "no weights at /x" in message and "configure" in message
    assert "activate" in not_ready_message(NodeState.INACTIVE)
