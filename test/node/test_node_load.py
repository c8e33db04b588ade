"""Load: a 30 Hz camera with a slow engine, and concurrent instructions."""
import collections
import threading
import time

import pytest

from conftest import make_image_msg
from lisa_ros.tools.node_process import rss_mb

pytestmark = pytest.mark.ros


def test_30hz_images_with_a_slow_engine_keep_memory_flat_and_use_the_newest_frame(lisa_io):
    from lisa_ros.msg import SegmentationResult

    io = lisa_io(params={"model.delay_s": 0.4, "max_queue": 2})
    pid = io.node.popen.pid
    frame = make_image_msg(width=640, height=480, fill=90)
    asked: dict[str, int] = {}
    rss = []
    started = time.monotonic()
    for index in range(1, 151):  # 5 s at 30 Hz
        frame.header.stamp.sec = index
        io.images.publish(frame)
        if index % 15 == 0:
            asked[f"newest {index}"] = index
            io.ask(f"newest {index}")
        if index in (45, 150):
            rss.append(rss_mb(pid))
        time.sleep(max(0.0, started + index / 30 - time.monotonic()))
    results = {r.instruction: r for r in io.results_for("newest", len(asked), timeout=20)}
    assert set(results) == set(asked)
    answered = [r for r in results.values() if r.status == SegmentationResult.STATUS_OK]
    assert len(answered) >= 3, [(r.instruction, r.status, r.status_message) for r in results.values()]
    # The frame newest when the instruction arrived. A few frames may still be in flight on a busy
    # 2-core machine, but a frame queue would fall 12 frames further behind with every 0.4 s answer
    # (over 100 by the end); the newest-frame slot keeps the lag small and not growing.
    lags = sorted((asked[r.instruction], asked[r.instruction] - r.header.stamp.sec) for r in answered)
    assert all(lag <= 20 for _, lag in lags), str(lags)  # negative: the instruction arrived late
    assert rss[1] - rss[0] < 30, f"RSS grew from {rss[0]:.0f} to {rss[1]:.0f} MB"
    values = io.diagnostics()  # best effort may lose frames on a loaded machine; most must arrive
    assert int(values["frames_received"]) >= 30
    assert int(values["frames_dropped"]) >= int(values["frames_received"]) - 2 * len(asked)  # replaced unused


def test_concurrent_instructions_are_each_answered_exactly_once(lisa_io):
    from lisa_ros.msg import SegmentationResult

    io = lisa_io(params={"model.delay_s": 0.1, "max_queue": 3})
    io.publish_frame(make_image_msg(stamp=(1, 0)))
    service_results = []

    def caller(worker: int):
        for turn in range(3):
            service_results.append(io.call(f"service {worker}.{turn}"))

    threads = [threading.Thread(target=caller, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    for index in range(15):
        io.ask(f"topic {index}")
    for thread in threads:
        thread.join(30)
    io.results_for("topic", 15, timeout=20)
    io.results_for("service", 9, timeout=20)
    time.sleep(0.5)  # late duplicates would arrive in this window
    counts = collections.Counter(r.instruction for r in io.results)
    assert all(count == 1 for count in counts.values()), counts
    assert len(counts) == 24 and len({r.request_id for r in io.results}) == 24
    statuses = collections.Counter(r.status for r in io.results)
    assert set(statuses) <= {SegmentationResult.STATUS_OK, SegmentationResult.STATUS_BUSY}
    assert statuses[SegmentationResult.STATUS_BUSY] >= 1 and statuses[SegmentationResult.STATUS_OK] >= 3
    assert all("max_queue" in r.status_message for r in io.results if r.status == SegmentationResult.STATUS_BUSY)
    assert len(service_results) == 9


def test_30_concurrent_service_calls_with_a_long_queue_neither_wait_for_threads_nor_go_stale(lisa_io, ros_probe):
    """With max_queue >= 64 the executor had 7 threads: waiting ~/segment calls held them all, the camera
    callback starved (false STALE_IMAGE while the camera was live) and the calls ran 2.5x slower."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    from lisa_ros.msg import SegmentationResult
    from lisa_ros.srv import Segment

    delay = 0.25
    # The old starvation held the camera callback for the whole burst (seconds); 0.6 s leaves room for a
    # CPU hog's scheduling gaps in the 40 Hz camera below without hiding that.
    io = lisa_io(params={"model.delay_s": delay, "max_queue": 64, "max_image_age": 0.6})
    io.publish_frame(make_image_msg(stamp=(1, 0)))
    segment = ros_probe.node.create_client(Segment, io.node.topic("~/segment"), qos_profile=QoSProfile(
        history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE))
    assert segment.wait_for_service(timeout_sec=10)
    camera_off = threading.Event()

    def camera():  # 40 Hz: the newest frame is far younger than max_image_age unless the node starves
        stamp = 1
        while not camera_off.wait(0.025):
            stamp += 1
            io.images.publish(make_image_msg(stamp=(stamp, 0)))

    camera_thread = threading.Thread(target=camera, daemon=True)
    camera_thread.start()
    try:
        started = time.monotonic()
        futures = [segment.call_async(Segment.Request(instruction=f"concurrent {i}")) for i in range(30)]
        deadline = started + 30
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            time.sleep(0.01)
        took = time.monotonic() - started
    finally:
        camera_off.set()
        camera_thread.join(2)
    assert all(f.done() for f in futures), f"{sum(f.done() for f in futures)} of 30 answered"
    statuses = collections.Counter(f.result().result.status for f in futures)
    assert statuses == {SegmentationResult.STATUS_OK: 30}, statuses
    assert took < 30 * delay + 3.0, f"30 calls took {took:.2f} s; the engine needs {30 * delay:.1f} s"
