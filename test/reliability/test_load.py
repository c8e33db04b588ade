"""Load over real DDS: instruction floods (hundreds per second) and 60 Hz 1080p image floods while inferring.

Bounded in count and time for CI: each flood lasts a few seconds. Claims checked:
the queue stays bounded (diagnostics' queue_depth never above max_queue + the one
in progress), every instruction is answered exactly once (a result or BUSY), the
node's RSS stays flat between two identical rounds, and with images flooding the
answer uses the newest frame at the instruction's arrival (lag does not grow).
"""
from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

from lisa_ros.core.types import Status
from lisa_ros.tools.node_process import rss_mb
from rel_support import collect_all, image_msg, settle, wait_for

CATEGORY = "Load (DDS)"


def _Result():
    from lisa_ros.msg import SegmentationResult

    return SegmentationResult
# Found by this suite and fixed in e260b4a: INSTRUCTION_QOS was KEEP_LAST depth 100, so DDS overwrote
# instructions the executor had not taken yet (a burst of 300 lost about 200, without any answer).
pytestmark = pytest.mark.ros

OK, BUSY = 0, 6


class DiagnosticsSampler(threading.Thread):
    """Samples the node's queue depth (from /diagnostics) and RSS while a flood runs."""

    def __init__(self, io, period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.io, self.period = io, period
        self.depths: list[int] = []
        self.rss: list[float] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            values = self.io.diagnostics()
            if "queue_depth" in values:
                self.depths.append(int(values["queue_depth"]))
            try:
                self.rss.append(rss_mb(self.io.node.popen.pid))
            except (OSError, AssertionError):
                pass
            self.stop_event.wait(self.period)

    def stop(self):
        self.stop_event.set()
        self.join(2)


def node_answer_count(io) -> int:
    """How many answers the node itself counted (all statuses), from /diagnostics."""
    values = io.diagnostics()
    return sum(int(v) for k, v in values.items() if k.startswith("answers_"))


RESULTS_SETTLE_S = 30.0
_flood_ids = itertools.count()


def flood_node_settings() -> tuple[str, dict, dict]:
    """(results topic, params, remaps) of a node for a flood: engine 20 ms per answer, max_queue 4, one frame
    fresh for 120 s (a flood can outlast the test config's max_image_age on a loaded machine), and its
    ~/result on a topic of the test's own with a writer 1000 deep: the answers (BUSY most) go out as fast as
    they are made, and a reader that lags them needs more than the default keep-last 10 (as the README says;
    the test's KEEP_ALL reader does on a loaded machine). Settling waits up to RESULTS_SETTLE_S for the last
    answer (at once when all arrived)."""
    import os

    topic = f"/reliability_flood_results_{os.getpid()}_{next(_flood_ids)}"
    params = {"model.delay_s": 0.02, "max_queue": 4, "max_image_age": 120.0,
              f"qos_overrides.{topic}.publisher.depth": 1000}
    return topic, params, {"~/result": topic}


def flooded_node(lisa_io, ros_probe):
    results_topic, params, remaps = flood_node_settings()
    io = lisa_io(params=params, remaps=remaps)
    io.results = collect_all(ros_probe, results_topic, _Result())
    return io


@pytest.mark.parametrize("publisher_depth", [1000, 10], ids=["depth1000", "depth10"])
def test_instruction_flood_is_bounded_answered_exactly_once_and_memory_flat(case, lisa_io, ros_probe,
                                                                         publisher_depth):
    """Two rounds of 400 instructions at ~300/s each, from a deep reliable publisher and from a typical
    depth-10 one. Lost instructions are split into those the node never received (dropped by DDS
    before the node: node-side answer count from /diagnostics) and answers that never arrived."""
    from std_msgs.msg import String

    io = flooded_node(lisa_io, ros_probe)
    publisher = ros_probe.publisher(io.node.topic("instruction"), String, qos=publisher_depth)
    sampler = DiagnosticsSampler(io, period=0.2)
    sampler.start()
    rate, per_round = 300.0, 400
    sent, round_rss, rates = [], [], []
    try:
        for round_index in range(2):
            io.publish_frame(image_msg(np.full((48, 64, 3), 30, np.uint8), "rgb8", stamp=(round_index + 1, 0)))
            started = time.monotonic()
            for index in range(per_round):
                text = f"flood r{round_index} #{index}"
                sent.append(text)
                publisher.publish(String(data=text))
                time.sleep(max(0.0, started + (index + 1) / rate - time.monotonic()))
            rates.append(per_round / (time.monotonic() - started))
            settle(lambda: len(io.results) >= len(sent), RESULTS_SETTLE_S)
            time.sleep(0.5)
            round_rss.append(rss_mb(io.node.popen.pid))
    finally:
        sampler.stop()
    time.sleep(0.3)
    accounting = case.account(sent, io.results, expected_statuses={OK, BUSY})
    node_answers = node_answer_count(io)
    received = len(io.results)
    statuses = [r.status for r in io.results]
    max_queue = int(io.diagnostics()["max_queue"])
    case.note(f"publisher depth {publisher_depth}: {len(sent)} sent at {min(rates):.0f}-{max(rates):.0f}/s; "
              f"node answered {node_answers} (so {len(sent) - node_answers} never reached the node), "
              f"{received} results received; {statuses.count(OK)} OK, {statuses.count(BUSY)} BUSY; "
              f"max queue_depth {max(sampler.depths or [0])} (max_queue {max_queue}); "
              f"RSS after round 1 {round_rss[0]:.1f} MB, after round 2 {round_rss[1]:.1f} MB")
    assert not accounting["duplicates"], accounting["duplicates"]
    assert not accounting["unexpected"], accounting["unexpected"][:5]
    assert received == node_answers, f"the node answered {node_answers} but {received} results arrived"
    assert not accounting["lost"], (f"{len(accounting['lost'])} instructions never answered "
                                    f"({len(sent) - node_answers} never reached the node), "
                                    f"e.g. {accounting['lost'][:5]}")
    assert statuses.count(BUSY) > 0 and statuses.count(OK) > 0
    assert max(sampler.depths) <= max_queue + 1, sampler.depths
    assert all("max_queue" in r.status_message for r in io.results if r.status == BUSY)
    assert round_rss[1] - round_rss[0] < 15, round_rss


def test_instruction_burst_beyond_the_subscription_depth_is_answered_exactly_once(case, lisa_io, ros_probe):
    """300 instructions published at once by a deep reliable publisher (a bursty planner, or a bag replay).

    Every one must be answered (most BUSY). With a KEEP_LAST depth-100 instruction
    subscription (before e260b4a), DDS overwrote the ones the executor had not taken yet.
    """
    from std_msgs.msg import String

    io = flooded_node(lisa_io, ros_probe)
    io.publish_frame(image_msg(np.full((48, 64, 3), 30, np.uint8), "rgb8", stamp=(1, 0)))
    publisher = ros_probe.publisher(io.node.topic("instruction"), String, qos=1000)
    sent = [f"burst #{index}" for index in range(300)]
    for text in sent:
        publisher.publish(String(data=text))
    settle(lambda: len(io.results) >= len(sent), RESULTS_SETTLE_S)
    time.sleep(0.5)
    accounting = case.account(sent, io.results, expected_statuses={OK, BUSY})
    node_answers = node_answer_count(io)
    case.note(f"burst of {len(sent)}: node answered {node_answers}, {len(io.results)} results received, "
              f"{len(accounting['lost'])} lost")
    assert not accounting["duplicates"] and not accounting["unexpected"], accounting
    assert not accounting["lost"], (f"{len(accounting['lost'])} of {len(sent)} instructions got no answer "
                                    f"(the node answered {node_answers})")


def test_instruction_burst_with_keep_all_override_is_answered_exactly_once(case, lisa_node_process, ros_probe):
    """QoS overrides still work on the instruction subscription (what a user would set before the fix)."""
    import os

    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    topic = f"/reliability_instructions_{os.getpid()}"
    results_topic, params, remaps = flood_node_settings()
    node = lisa_node_process(params={**params, f"qos_overrides.{topic}.subscription.history": "keep_all"},
                             remaps={**remaps, "instruction": topic})
    results = collect_all(ros_probe, results_topic, _Result())
    images = ros_probe.publisher(node.topic("image"), Image)
    publisher = ros_probe.publisher(topic, String, qos=1000)
    for index in range(10):  # best effort: send a few so that one surely arrives
        images.publish(image_msg(np.full((48, 64, 3), 30, np.uint8), "rgb8", stamp=(1, index)))
        time.sleep(0.05)
    time.sleep(0.3)
    sent = [f"keep_all burst #{index}" for index in range(300)]
    for text in sent:
        publisher.publish(String(data=text))
    settle(lambda: len(results) >= len(sent), RESULTS_SETTLE_S)
    time.sleep(0.5)
    accounting = case.account(sent, results, expected_statuses={OK, BUSY})
    assert not accounting["lost"] and not accounting["duplicates"] and not accounting["unexpected"], accounting


def test_60hz_1080p_image_flood_while_inferring_keeps_newest_frame_and_flat_memory(case, lisa_io, ros_probe):
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    io = lisa_io(params={"model.delay_s": 0.25, "max_queue": 2})
    io.results = collect_all(ros_probe, io.node.topic("~/result"), _Result())
    frame = image_msg(np.zeros((1080, 1920, 3), np.uint8), "rgb8", stamp=(0, 0))
    frame.data = bytes(frame.data)  # serialised once per publish; avoid re-conversion
    publisher = ros_probe.publisher(io.node.topic("image"), Image, qos=1)
    instructions = ros_probe.publisher(io.node.topic("instruction"), String, qos=100)
    sampler = DiagnosticsSampler(io, period=0.1)
    sampler.start()
    asked: dict[str, int] = {}
    duration, hz = 6.0, 60.0
    started = time.monotonic()
    index = 0
    try:
        while time.monotonic() - started < duration:
            index += 1
            frame.header.stamp.sec = index
            publisher.publish(frame)
            if index % 15 == 0:  # 4 instructions per second
                text = f"newest {index}"
                asked[text] = index
                instructions.publish(String(data=text))
            time.sleep(max(0.0, started + index / hz - time.monotonic()))
        elapsed = time.monotonic() - started
    finally:
        pass
    settle(lambda: len(io.results) >= len(asked), 15)
    sampler.stop()
    accounting = case.account(list(asked), io.results, expected_statuses={OK, BUSY})
    answered = [r for r in io.results if r.status == OK]
    lags = [asked[r.instruction] - r.header.stamp.sec for r in answered if r.instruction in asked]
    values = io.diagnostics()
    received, dropped = int(values["frames_received"]), int(values["frames_dropped"])
    rss = sampler.rss
    third = max(1, len(rss) // 3)
    early, late = float(np.median(rss[third:2 * third])), float(np.median(rss[2 * third:]))
    case.note(f"published {index} frames of 1920x1080 rgb8 in {elapsed:.1f} s ({index / elapsed:.0f} Hz achieved by "
              f"the Python publisher); node received {received}, dropped (replaced unused) {dropped}; "
              f"{len(answered)}/{len(asked)} OK, frame lag (frames behind the newest published) {sorted(lags)}; "
              f"RSS median middle third {early:.0f} MB, last third {late:.0f} MB, max {max(rss):.0f} MB")
    assert not accounting["lost"] and not accounting["duplicates"] and not accounting["unexpected"], accounting
    assert len(answered) >= 3
    # Newest frame at arrival: a few frames may be in flight on 2 busy cores; queued frames would make
    # the lag grow by ~15 frames per answer (0.25 s at 60 Hz).
    # The lag measures transport too: frames already on the wire when the instruction was sent, and
    # 6 MB frames that the node's input callback is still deserialising when the instruction arrives.
    # Queued frames would add ~15 frames per answer (0.25 s at 60 Hz) and grow without bound.
    assert all(lag <= 30 for lag in lags) and float(np.median(lags)) <= 6, lags
    starved = [lag for lag in lags if lag < -3]
    if starved:  # answered on a frame published after the instruction: it waited behind image callbacks
        case.note(f"instruction delivery delayed: answered on frames {sorted(starved)} frames newer than "
                  "the newest one when it was sent")
    assert received > 60 and dropped >= received - 2 * len(asked) - 2
    # Queued frames would add ~360 MB per second (60 Hz x 6 MB); allocator arenas and frames in flight on a
    # loaded machine move the median by up to a few frames (42 MB seen with a CPU hog beside the suite).
    assert late - early < 100, (early, late)


# Found by this suite and fixed in 873116c: image and instruction subscriptions shared one
# MutuallyExclusiveCallbackGroup, and rclpy offers ready subscriptions in creation order (image first),
# so under a 1080p flood instructions waited up to 1.8 s behind frames.


def test_instructions_are_not_starved_by_an_image_flood(case, lisa_io, ros_probe):
    """1080p frames at 60 Hz, an instruction every 20 frames: each must be taken within ~15 frames (0.25 s),
    i.e. answered on a frame at most 15 newer than the newest when sent (before the fix: up to 83)."""
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    io = lisa_io(params={"model.delay_s": 0.05, "max_queue": 4})
    io.results = collect_all(ros_probe, io.node.topic("~/result"), _Result())
    frame = image_msg(np.zeros((1080, 1920, 3), np.uint8), "rgb8", stamp=(0, 0))
    frame.data = bytes(frame.data)
    publisher = ros_probe.publisher(io.node.topic("image"), Image, qos=1)
    instructions = ros_probe.publisher(io.node.topic("instruction"), String, qos=100)
    asked = {}
    started, index = time.monotonic(), 0
    while time.monotonic() - started < 4.0:
        index += 1
        frame.header.stamp.sec = index
        publisher.publish(frame)
        if index % 20 == 0:
            asked[f"starve {index}"] = index
            instructions.publish(String(data=f"starve {index}"))
        time.sleep(max(0.0, started + index / 60 - time.monotonic()))
    rate = index / (time.monotonic() - started)
    settle(lambda: len(io.results) >= len(asked), 15)
    accounting = case.account(list(asked), io.results, expected_statuses={OK, BUSY})
    delays = sorted(r.header.stamp.sec - asked[r.instruction] for r in io.results
                    if r.instruction in asked and r.status == OK)
    case.note(f"{rate:.0f} Hz 1080p: instruction taken after {delays} frames (answered frame - newest frame "
              "when the instruction was sent)")
    assert not accounting["lost"] and not accounting["duplicates"], accounting
    assert delays and max(delays) <= 15, delays


def test_a_slow_result_subscriber_still_gets_every_answer(case, lisa_io, ros_probe, ros_context):
    """A consumer that takes 15 ms per result while 150 answers (mostly BUSY) come out at ~300/s:
    the reliable result publisher must not overwrite answers the consumer has not taken yet."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from lisa_ros.msg import SegmentationResult
    from lisa_ros.tools.spinning_node import SpinningNode

    io = lisa_io(params={"model.delay_s": 0.02, "max_queue": 4})
    io.results = collect_all(ros_probe, io.node.topic("~/result"), _Result())
    slow = SpinningNode(f"reliability_slow_consumer_{int(time.monotonic() * 1000) % 100000}", ros_context)
    got = []

    def consume(msg):
        got.append(msg)
        time.sleep(0.015)

    slow.node.create_subscription(SegmentationResult, io.node.topic("~/result"), consume,
                                  QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                                             reliability=ReliabilityPolicy.RELIABLE))
    try:
        wait_for(lambda: ros_probe.node.count_subscribers(io.node.topic("~/result")) >= 2, 10, "the slow consumer")
        io.publish_frame(image_msg(np.full((48, 64, 3), 30, np.uint8), "rgb8", stamp=(1, 0)))
        publisher = ros_probe.publisher(io.node.topic("instruction"), String, qos=1000)
        sent = [f"slow consumer #{index}" for index in range(90)]
        for text in sent:
            publisher.publish(String(data=text))
            time.sleep(1 / 300)
        settle(lambda: len(got) >= len(sent), 15)
        time.sleep(0.3)
        accounting = case.account(sent, got, expected_statuses={OK, BUSY})
        case.note(f"slow consumer received {len(got)} of {len(sent)} answers; node answered {node_answer_count(io)}")
    finally:
        slow.close()
    assert not accounting["lost"] and not accounting["duplicates"] and not accounting["unexpected"], accounting


def test_service_call_flood_does_not_exhaust_the_executor(case, lisa_io, ros_probe):
    """20 concurrent service clients (more than the executor's threads) while topic instructions flow:
    every call and every instruction is answered exactly once, and nothing deadlocks. (Found by this
    suite, fixed in 873116c: with the default service QoS, depth 10, 3-4 of 100 requests never got a reply.)"""
    from lisa_ros.srv import Segment

    io = lisa_io(params={"model.delay_s": 0.1, "max_queue": 4})
    io.results = collect_all(ros_probe, io.node.topic("~/result"), _Result())
    io.publish_frame(image_msg(np.full((24, 32, 3), 70, np.uint8), "rgb8", stamp=(1, 0)))
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    # A client that keeps every response: with the default service QoS (depth 10) the test's own
    # response reader can overwrite replies while 20 threads wait on it.
    segment = ros_probe.node.create_client(Segment, io.node.topic("~/segment"), qos_profile=QoSProfile(
        history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE))
    assert segment.wait_for_service(timeout_sec=10)
    replies, errors = [], []

    def client(worker: int):
        for turn in range(5):
            text = f"svc {worker}.{turn}"
            future = segment.call_async(Segment.Request(instruction=text))
            if settle(future.done, 5):
                replies.append((text, future.result().result))
            else:
                errors.append(text)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(20)]
    camera_on = threading.Event()

    def camera():  # keeps the newest frame fresh (max_image_age) however long the flood takes
        index = 1
        while not camera_on.wait(0.5):
            index += 1
            io.images.publish(image_msg(np.full((24, 32, 3), 70, np.uint8), "rgb8", stamp=(index, 0)))

    camera_thread = threading.Thread(target=camera, daemon=True)
    camera_thread.start()
    for thread in threads:
        thread.start()
    topic_sent = []
    for index in range(40):
        text = f"topic during svc flood {index}"
        topic_sent.append(text)
        io.ask(text)
        time.sleep(0.025)
    for thread in threads:
        thread.join(60)
    camera_on.set()
    sent = topic_sent + [f"svc {w}.{t}" for w in range(20) for t in range(5)]
    settle(lambda: len(io.results) >= len(sent), 15)
    time.sleep(0.3)
    accounting = case.account(sent, io.results, expected_statuses={OK, BUSY})
    mismatched = [t for t, r in replies if r.instruction != t]
    statuses = [r.status for _, r in replies]
    on_topic = {r.instruction: r for r in io.results}
    unreplied = [(t, Status.name_of(on_topic[t].status), round(on_topic[t].total_ms)) if t in on_topic else (t, None)
                 for t in errors]
    case.note(f"{len(replies)}/100 service replies ({statuses.count(OK)} OK, {statuses.count(BUSY)} BUSY), "
              f"{len(errors)} without reply (on ~/result: {unreplied}); "
              f"topic: {sum(1 for r in io.results if r.instruction in topic_sent)}/40 answered; "
              f"node answers {sum(int(v) for k, v in io.diagnostics().items() if k.startswith('answers_'))}")
    assert not errors, f"{len(errors)} service calls got no reply: {errors[:5]}"
    assert not mismatched and not accounting["lost"] and not accounting["duplicates"], accounting
    assert not accounting["unexpected"], accounting["unexpected"][:5]
