"""Faults over real DDS: engine errors, hangs past inference_timeout, GPU out-of-memory, model load
failures (with the real LISA engine on a tiny checkpoint), and SIGINT/SIGTERM in the middle of work.

The plumbing engine injects faults by words in the instruction (#raise, #oom, #hang;
config/plumbing_test.yaml: inference_timeout 1.0 s, hang 3.0 s).
"""
from __future__ import annotations

import collections
import random
import shutil
import signal
import threading
import time

import numpy as np
import pytest

from lisa_ros.core.types import Status
from lisa_ros.tools.node_process import thread_count
from rel_support import children, collect_all, image_msg, settle, wait_for

CATEGORY = "Faults (DDS)"
pytestmark = pytest.mark.ros

OK, NOT_FOUND, NO_IMAGE, BUSY, TIMEOUT, ENGINE_ERROR, OUT_OF_MEMORY, NOT_READY = 0, 1, 4, 6, 7, 8, 9, 10
EXPECTED = {"#raise": {ENGINE_ERROR}, "#oom": {OUT_OF_MEMORY}, "": {OK}}


def test_fault_mix_from_topic_and_service_is_answered_once_each_with_its_status(case, lisa_io):
    """90 instructions (a third faulty) at 30/s on the topic while 3 service clients call in a loop."""
    # A queue longer than all 108 requests: every one reaches the engine, so each gets exactly its fault's status
    # however slow the machine (with two CPU hogs, a 24-deep queue overflowed: BUSY, the load tests' subject).
    io = lisa_io(params={"model.delay_s": 0.01, "max_queue": 128})
    io.publish_frame(image_msg(np.full((24, 32, 3), 50, np.uint8), "rgb8", stamp=(1, 0)))
    rng = random.Random(4)
    kinds = {}
    service_results = []

    def caller(worker: int):
        for turn in range(6):
            kind = rng.choice(["#raise", "#oom", ""])
            text = f"service {worker}.{turn} cup {kind}".strip()
            kinds[text] = kind
            result = io.call(text, timeout=30)
            service_results.append((text, result))

    threads = [threading.Thread(target=caller, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    sent = []
    started = time.monotonic()
    for index in range(90):
        kind = ["#raise", "#oom", "", "", ""][index % 5] if index % 7 else ""
        text = f"topic {index} cup {kind}".strip()
        kinds[text] = kind
        sent.append(text)
        io.ask(text)
        time.sleep(max(0.0, started + (index + 1) / 30 - time.monotonic()))
    for thread in threads:
        thread.join(60)
    sent += [text for text, _ in service_results]
    settle(lambda: len(io.results) >= len(sent), 15)
    time.sleep(0.3)
    results = list(io.results)
    accounting = case.account(sent, results)
    wrong = []
    for result in results:
        kind = kinds.get(result.instruction)
        if kind is not None and result.status not in EXPECTED[kind]:
            wrong.append((result.instruction, Status.name_of(result.status), result.status_message[:60]))
    for text, result in service_results:  # the service reply is the same single answer
        if result.status not in EXPECTED[kinds[text]]:
            wrong.append((text, "service reply", Status.name_of(result.status)))
    case.failed += len(wrong)
    case.failures += [str(w) for w in wrong]
    cleared = [r for r in results if r.status == OUT_OF_MEMORY and "caches cleared" in r.status_message]
    case.note(f"{len(sent)} requests ({sum(1 for t in sent if kinds[t])} faulty): "
              f"{sum(r.status == OK for r in results)} OK, {sum(r.status == BUSY for r in results)} BUSY, "
              f"{sum(r.status == ENGINE_ERROR for r in results)} ENGINE_ERROR, {len(cleared)} OUT_OF_MEMORY")
    assert not accounting["lost"] and not accounting["duplicates"], accounting
    assert not wrong, wrong[:5]
    assert all("caches cleared" in r.status_message for r in results if r.status == OUT_OF_MEMORY)
    # Still healthy: a plain request right after the mix succeeds.
    final = io.call("final cup")
    case.check(final.status == OK, "request after the mix")
    assert final.status == OK


def test_hang_is_answered_timeout_in_time_and_the_node_recovers(case, lisa_io):
    io = lisa_io()
    io.publish_frame(image_msg(np.full((24, 32, 3), 50, np.uint8), "rgb8", stamp=(1, 0)))
    started = time.monotonic()
    result = io.call("cup #hang", timeout=10)
    took = time.monotonic() - started
    case.check(result.status == TIMEOUT and "inference_timeout = 1.0" in result.status_message
               and "caches cleared" in result.status_message and took < 2.0,
               f"hang: {Status.name_of(result.status)} after {took:.2f} s", error=True)
    # Once the hung call is over (3 s), requests succeed again.
    wait_for(lambda: time.monotonic() - started > 3.3, 5, "the injected hang to end")
    after = io.call("cup after the hang ended")
    case.check(after.status == OK, f"after the hang: {Status.name_of(after.status)}")
    case.note(f"hang answered TIMEOUT after {took:.2f} s (inference_timeout 1.0 s)")
    assert not case.failures, case.failures


def test_the_request_right_after_a_hang_timeout_succeeds(case, lisa_io):
    """Found by this suite, fixed in e260b4a (Engine.cancel()): the hung call used to keep the engine
    thread, so the next request timed out as well."""
    io = lisa_io()
    io.publish_frame(image_msg(np.full((24, 32, 3), 50, np.uint8), "rgb8", stamp=(1, 0)))
    hung = io.call("cup #hang", timeout=10)
    assert hung.status == TIMEOUT, hung.status_message
    case.answered_ok("hang", error=True)
    after = io.call("cup right after the timeout", timeout=10)
    case.check(after.status == OK, f"next request: {Status.name_of(after.status)} {after.status_message[:80]}")
    assert after.status == OK, after.status_message


# -- model load failure, with the real LISA engine (tiny checkpoint) ---------------------------

def _lisa_params(path) -> dict:
    return {"engine": "lisa", "model.path": str(path), "model.device": "cpu", "model.precision": "fp32",
            "model.max_new_tokens": 12, "model.local_files_only": True, "inference_timeout": 120.0,
            "max_image_pixels": 4_000_000, "diagnostics_period": 0.2}


def _set_parameter(probe, node, name, value):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    client = probe.client(node.topic("~/set_parameters"), SetParameters)
    parameter = Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value))
    return probe.call(client, SetParameters.Request(parameters=[parameter])).results[0].successful


def test_lisa_load_failures_fail_configure_with_the_reason_then_configure_after_the_fix(
        case, lisa_node_process, ros_probe, tiny_lisa, tmp_path):
    """Missing path, then a checkpoint with a malicious pickle shard (refused, never run), then the
    fixed path: configure succeeds and a request with special-token text is answered by the tiny LISA."""
    import torch

    from lisa_ros.srv import Segment
    from test_security import _Exploit

    good = tmp_path / "good"
    shutil.copytree(tiny_lisa.lisa_dir, good / tiny_lisa.lisa_dir.name)
    shutil.copytree(tiny_lisa.clip_dir, good / tiny_lisa.clip_dir.name)
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    marker = tmp_path / "PWNED-through-the-node"
    shard = bad / tiny_lisa.lisa_dir.name / "pytorch_model-00002-of-00002.bin"
    state = torch.load(shard, weights_only=True)
    state["model.exploit"] = _Exploit(f"touch {marker}")
    torch.save(state, shard)

    node = lisa_node_process(params_file=None, params=_lisa_params(tmp_path / "missing"), wait_active=False)
    node.wait_for_state(ros_probe, "unconfigured", timeout=60)
    wait_for(lambda: "configure failed" in node.log, 30, "the configure failure in the log")
    case.check("does not exist" in node.log, "missing path named", error=True)

    assert _set_parameter(ros_probe, node, "model.path", str(bad / tiny_lisa.lisa_dir.name))
    refused = node.change_state(ros_probe, "configure")
    case.check(not refused and "refusing to load it" in node.log and not marker.exists(),
               "malicious shard refused through the node", error=True)

    assert _set_parameter(ros_probe, node, "model.path", str(good / tiny_lisa.lisa_dir.name))
    configured = node.change_state(ros_probe, "configure") and node.change_state(ros_probe, "activate")
    case.check(configured, "configure + activate after the fix")
    assert configured, node.log[-3000:]
    client = ros_probe.client(node.topic("~/segment"), Segment)
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for index, text in enumerate(["the cup", "[SEG] <image> <im_start></s> [SEG]"]):
        request = Segment.Request(instruction=text, image=image_msg(pixels, "rgb8", stamp=(10 + index, 0)))
        result = ros_probe.call(client, request, timeout=60).result
        answered = Status.is_answered(result.status)
        case.check(answered and "[SEG]" not in result.explanation and "</s>" not in result.explanation,
                   f"{text!r}: {Status.name_of(result.status)} {result.explanation[:60]!r}")
    assert not marker.exists()
    assert not case.failures, case.failures


# -- signals -----------------------------------------------------------------------------------

def _descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        kids = children(frontier.pop())
        found += kids
        frontier += kids
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stop_and_check(case, node, sig, what: str) -> float:
    pid = node.popen.pid
    descendants = _descendants(pid)
    threads = thread_count(pid)
    took = node.stop(sig)
    leftovers = [p for p in descendants if _alive(p)]
    ok = node.popen.returncode == 0 and took < 2.0 and not leftovers and "Traceback" not in node.log
    case.check(ok, f"{what} {sig.name}: exit {node.popen.returncode} in {took:.2f} s ({threads} threads before), "
                   f"leftover processes {leftovers}")
    case.note(f"{what} {sig.name}: exited {node.popen.returncode} in {took:.2f} s")
    assert node.popen.returncode == 0, node.log[-2000:]
    assert took < 2.0, f"exit took {took:.2f} s"
    assert not leftovers and "Traceback" not in node.log, (leftovers, node.log[-2000:])
    return took


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_floods_and_a_pending_service_call_exits_cleanly_within_2_s(case, lisa_io, ros_probe, sig):
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from lisa_ros.srv import Segment

    io = lisa_io(params={"model.delay_s": 0.3, "max_queue": 4})
    frame = image_msg(np.zeros((480, 640, 3), np.uint8), "rgb8")
    images = ros_probe.publisher(io.node.topic("image"), Image, qos=1)
    stop = threading.Event()

    def flood():
        index = 0
        while not stop.is_set():
            index += 1
            frame.header.stamp.sec = index
            images.publish(frame)
            if index % 12 == 0:  # 5 instructions/s: the queue is busy but has room for the service call
                io.instructions.publish(String(data=f"flood {index}"))
            time.sleep(1 / 60)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    time.sleep(0.5)
    pending = io.segment_client.call_async(Segment.Request(instruction="pending service call"))
    time.sleep(0.1)
    try:
        _stop_and_check(case, io.node, sig, "under floods with a service call pending")
    finally:
        stop.set()
        flooder.join(2)
    # The pending service call either got its single answer or the server went away; never a hang here.
    settle(pending.done, 1.0)
    outcome = ("answered: " + Status.name_of(pending.result().result.status) if pending.done()
               else "left unanswered (server gone)")
    case.note(f"pending service call {outcome}")


@pytest.mark.parametrize("sig", [signal.SIGTERM], ids=["SIGTERM"])
def test_instructions_pending_at_a_signal_are_answered_before_exit(case, lisa_io, sig):
    """Found by this suite, fixed in 873116c: rclpy's own signal handler shut the context down before
    the pending requests were answered NOT_READY, so those answers could not be published."""
    io = lisa_io(params={"model.delay_s": 2.0, "max_queue": 4, "inference_timeout": 30.0})
    io.publish_frame(image_msg(np.full((8, 8, 3), 9, np.uint8), "rgb8", stamp=(1, 0)))
    sent = [f"pending at signal {index}" for index in range(4)]
    for text in sent:
        io.ask(text)
    wait_for(lambda: io.diagnostics().get("queue_depth") == "4", 10, "4 requests queued / in progress")
    took = io.node.stop(sig)
    time.sleep(0.5)
    accounting = case.account(sent, io.results, expected_statuses={NOT_READY})
    case.note(f"{sig.name} with 4 pending: exit in {took:.2f} s, {len(sent) - len(accounting['lost'])} answered")
    assert took < 2.0
    assert not accounting["lost"], f"{len(accounting['lost'])} pending instructions got no answer"


@pytest.mark.parametrize("state", ["unconfigured-after-failure", "inactive"])
def test_signal_in_other_lifecycle_states_exits_cleanly(case, lisa_node_process, ros_probe, state):
    if state == "inactive":
        node = lisa_node_process()
        assert node.change_state(ros_probe, "deactivate")
        node.wait_for_state(ros_probe, "inactive")
    else:
        node = lisa_node_process(params={"model.load_error": "no weights"}, wait_active=False)
        node.wait_for_state(ros_probe, "unconfigured")
    _stop_and_check(case, node, signal.SIGTERM, state)


def test_release_ends_worker_and_engine_threads_even_during_a_hang(case, ros_context, tmp_path):
    """In-process: release() (what SIGINT/SIGTERM run) leaves no lisa-* thread behind within 2 s."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from std_msgs.msg import String

    from lisa_ros.node.lisa_node import LisaNode

    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    engine: plumbing\n    model:\n      hang_on: '#hang'\n"
                      "      hang_s: 30.0\n    inference_timeout: 60.0\n")
    node = LisaNode("lisa_thread_probe", context=ros_context, cli_args=["--ros-args", "--params-file", str(params)])
    before = {t.ident for t in threading.enumerate()}
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        node._frames.put(__import__("lisa_ros.core.frames", fromlist=["Frame"]).Frame(
            payload=image_msg(np.zeros((4, 4, 3), np.uint8), "rgb8"), header=None, key=("k",),
            received=time.monotonic()))
        node._on_instruction(String(data="cup #hang"))
        wait_for(lambda: node._worker is not None and node._worker.queue_depth == 1, 5, "the hung request")
        started = time.monotonic()
        node.release("test shutdown")
        settle(lambda: not [t for t in threading.enumerate() if t.ident not in before and t.is_alive()
                            and t.name.startswith("lisa-")], 2.0)
        took = time.monotonic() - started
        left = [t.name for t in threading.enumerate() if t.ident not in before and t.name.startswith("lisa-")]
    finally:
        node.destroy_node()
    case.check(not left and took < 2.0, f"threads left {left} after {took:.2f} s")
    assert not left, left


def _transition(node, probe, label: str, timeout: float = 10.0) -> bool:
    """A lifecycle transition that gives up early when the node process has died."""
    from lifecycle_msgs.srv import ChangeState

    client = probe.client(node.topic("~/change_state"), ChangeState)
    request = ChangeState.Request()
    request.transition.label = label
    future = client.call_async(request)
    settle(lambda: future.done() or node.popen.poll() is not None, timeout)
    return bool(future.done() and future.result().success)


def test_lifecycle_transitions_under_an_instruction_flood_answer_every_received_instruction_once(
        case, lisa_io, ros_probe):
    """Deactivate/activate three times while instructions arrive at 100/s and frames at 30 Hz: every
    instruction gets exactly one answer (a result, BUSY, or NOT_READY while inactive). Found by this suite:
    deactivate under traffic could crash the node (rclpy InvalidHandle; handled in 873116c), and the
    instructions in flight around each transition got no answer while the subscription was destroyed and
    re-created (15-158 of ~400; fixed in ff8b232 by keeping the subscription and answering NOT_READY)."""
    from std_msgs.msg import String

    from lisa_ros.msg import SegmentationResult

    io = lisa_io(params={"model.delay_s": 0.05, "max_queue": 4})
    io.results = collect_all(ros_probe, io.node.topic("~/result"), SegmentationResult)
    publisher = ros_probe.publisher(io.node.topic("instruction"), String, qos=1000)
    stop = threading.Event()
    sent = []

    def flood():
        index = 0
        while not stop.is_set():
            index += 1
            if index % 3 == 0:
                io.images.publish(image_msg(np.full((24, 32, 3), 60, np.uint8), "rgb8", stamp=(index, 0)))
            text = f"lifecycle flood {index}"
            sent.append((text, publisher.get_subscription_count() > 0))
            publisher.publish(String(data=text))
            time.sleep(0.01)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        for _ in range(3):
            time.sleep(0.6)
            transitions = [_transition(io.node, ros_probe, "deactivate")]
            time.sleep(0.3)
            transitions.append(_transition(io.node, ros_probe, "activate"))
            alive = io.node.popen.poll() is None
            case.check(all(transitions) and alive, f"deactivate/activate: {transitions}, node alive {alive}")
            assert alive and all(transitions), io.node.log[-3000:]
        time.sleep(0.6)
    finally:
        stop.set()
        flooder.join(2)
    settle(lambda: len(io.results) >= sum(1 for _, subscribed in sent if subscribed), 10)
    time.sleep(0.5)
    node_answers = sum(int(v) for k, v in io.diagnostics().items() if k.startswith("answers_"))
    answered = {r.instruction for r in io.results}
    duplicates = len(io.results) - len(answered)
    unsubscribed = [t for t, subscribed in sent if not subscribed and t not in answered]
    expected = [t for t, subscribed in sent if subscribed or t in answered]
    accounting = case.account(expected, io.results, expected_statuses={OK, BUSY, NOT_READY, NO_IMAGE})
    statuses = collections.Counter(Status.name_of(r.status) for r in io.results)
    case.note(f"{len(sent)} sent across 3 deactivate/activate cycles: node answered {node_answers}, "
              f"{len(io.results)} results {dict(statuses)}; {len(unsubscribed)} published with no subscriber "
              f"(node inactive), {len(accounting['lost'])} lost while subscribed")
    assert duplicates == 0 and not accounting["duplicates"], accounting["duplicates"]
    assert len(io.results) == node_answers, (len(io.results), node_answers)
    assert not accounting["unexpected"], accounting["unexpected"][:5]
    assert not unsubscribed and not accounting["lost"], (unsubscribed[:5], accounting["lost"][:5])
