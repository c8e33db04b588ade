"""Robot-stack interfaces of lisa_node over real DDS: the correlated instruction topic."""
import pytest

from conftest import make_image_msg, wait_for

pytestmark = pytest.mark.ros


def structured_publisher(io):
    from lisa_ros.msg import Instruction

    return io.probe.publisher(io.node.topic("instruction") + "/structured", Instruction, qos=100)


def results_with_id(io, request_id, timeout=15.0):
    return wait_for(lambda: [r for r in list(io.results) if r.request_id == request_id], timeout,
                    f"a result for request_id {request_id!r}")


def test_structured_instruction_echoes_the_client_id_and_the_text_exactly(lisa_io):
    """The String topic's echo is stripped and cut at 500 characters, its ids the node's: a client could not tell
    which result answered what. lisa_ros/Instruction carries the client's id and comes back verbatim."""
    from lisa_ros.msg import Instruction

    io = lisa_io(params={"max_instruction_chars": 2000})
    io.publish_frame(make_image_msg(stamp=(5, 0)))
    publish = structured_publisher(io).publish
    long = "  " + ("the cup " * 250)[:1996] + "  "
    sent = {"client-1": "  the cup\n", "client-2": long, "client-3": "the cup"}
    for request_id, text in sent.items():
        publish(Instruction(request_id=request_id, text=text, conversation_id="kitchen"))
    for request_id, text in sent.items():
        result, = results_with_id(io, request_id)
        assert result.status == result.STATUS_OK, result.status_message
        assert result.instruction == text and result.conversation_id == "kitchen"
    first, = results_with_id(io, "client-1")
    assert "'the cup'" in first.explanation  # the engine was asked the stripped text
    third, = results_with_id(io, "client-3")
    assert third.explanation.startswith("turn 3")  # one conversation, in order
    publish(Instruction(request_id="client-4", text="the cup", conversation_id="kitchen", reset_conversation=True))
    assert results_with_id(io, "client-4")[0].explanation.startswith("turn 1")


def test_structured_refusals_keep_the_id_and_the_string_topic_keeps_node_ids(lisa_io):
    from lisa_ros.msg import Instruction

    io = lisa_io()
    io.publish_frame(make_image_msg(stamp=(5, 0)))
    publish = structured_publisher(io).publish
    publish(Instruction(request_id="blank", text="  \t "))
    blank, = results_with_id(io, "blank")
    assert blank.status == blank.STATUS_INVALID_INSTRUCTION and blank.instruction == "  \t "
    too_long = "x" * 300  # plumbing_test.yaml: max_instruction_chars 200
    publish(Instruction(request_id="long", text=too_long))
    refused, = results_with_id(io, "long")
    assert refused.status == refused.STATUS_INVALID_INSTRUCTION and refused.instruction == too_long
    publish(Instruction(request_id="", text="the mug"))  # no id: the node assigns one
    io.ask("  the plate  ")  # the uncorrelated convenience path, as before
    for text in ("the mug", "the plate"):
        result, = io.results_for(text)
        assert result.status == result.STATUS_OK and result.request_id.isdigit()
