"""Benchmark 3a: node plumbing overhead, instruction -> result over real DDS with a zero-cost engine.

Three processes' worth of path: this process publishes a camera frame and then
instructions (std_msgs/String), ``lisa_node`` (its own process, ``engine:
plumbing`` with ``delay_s: 0``) validates the instruction, decodes the frame
message, runs the engine (free), builds the SegmentationResult (a full-size
mono8 mask, box, score), publishes it plus ``~/mask`` and ``~/explanation``;
this process's subscriber timestamps the result. One request at a time, so the
figure is pure overhead, not queueing.

Each size runs twice: the result carries one full-resolution mask (plus
``~/mask``), or none (instruction with "nothing": NOT_FOUND, text only), which
separates the mask's serialisation and transport from the rest.

Reported per frame size: round trip (publish instruction -> result received,
this process's clock) and the node's own ``total_ms`` (instruction received ->
result published), median / p95.

    source scripts/ros_env.sh --isolated && python -P benchmarks/plumbing.py [--requests 200]
    source scripts/ros_env.sh --isolated && python -P benchmarks/plumbing.py --breakdown   # + stages inside the node
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))

import common  # noqa: E402
import ros_node  # noqa: E402

SIZES = {"640x480": (640, 480), "1280x720": (1280, 720)}


def measure(width: int, height: int, requests: int, warmup: int, with_mask: bool = True,
            breakdown: bool = False, idle_seconds: float = 3.0) -> dict:
    breakdown_path = None
    if breakdown:  # run the node with timing probes (benchmarks/node_breakdown.py)
        import os
        import tempfile

        breakdown_path = Path(tempfile.mkdtemp(prefix="lisa_breakdown_")) / "breakdown.json"
        os.environ["LISA_BENCH_NODE_EXECUTABLE"] = str(Path(__file__).with_name("node_breakdown.py"))
        os.environ["LISA_BENCH_BREAKDOWN_OUT"] = str(breakdown_path)
        os.environ["LISA_BENCH_BREAKDOWN_SKIP"] = str(warmup)
    node = ros_node.start_node({
        "engine": "plumbing", "model.delay_s": 0.0, "max_image_age": 0.0, "inference_timeout": 10.0,
        "max_queue": 4, "diagnostics_period": 0.2, "max_image_pixels": 4_000_000,
    })
    client = None
    try:
        client = ros_node.Client(node, f"lisa_bench_plumbing_{width}x{height}")
        client.wait_ready()
        frame = ros_node.image_msg(width, height)
        # Best-effort images: the first may go out before the node's side has matched; resend until seen.
        for _ in range(100):
            client.images.publish(frame)
            if client.wait(lambda: int(client.diagnostics.get("frames_received", 0)) >= 1, 0.3):
                break
        else:
            raise RuntimeError(f"the node never received the frame; log:\n{node.log_tail()}")
        round_trip, without_engine, node_total, node_inference, failures, statuses = [], [], [], [], 0, {}
        # The node burns some CPU while idle (executor threads, 5 Hz diagnostics): measure that rate first.
        idle_start, idle_cpu = time.perf_counter(), ros_node.cpu_seconds(node.pid)
        time.sleep(idle_seconds)
        idle_rate = ((ros_node.cpu_seconds(node.pid) or 0) - (idle_cpu or 0)) / (time.perf_counter() - idle_start)
        cpu_before = wall_before = None
        for index in range(warmup + requests):
            if index == warmup:
                cpu_before, wall_before = ros_node.cpu_seconds(node.pid), time.perf_counter()
            # The plumbing engine returns one full-frame mask, or none when the instruction says "nothing".
            text = f"segment {'the cup' if with_mask else 'nothing'} {width}x{height} #{index}"
            start = client.ask(text)
            answer = client.wait_result(text, 10.0)
            if answer is None:
                failures += 1
                continue
            arrived, msg = answer
            statuses[msg.status] = statuses.get(msg.status, 0) + 1
            if index >= warmup:
                round_trip.append((arrived - start) * 1000)
                without_engine.append((arrived - start) * 1000 - msg.inference_ms)
                node_total.append(msg.total_ms)
                node_inference.append(msg.inference_ms)
        cpu_after, wall_after = ros_node.cpu_seconds(node.pid), time.perf_counter()
        row = {
            "frame": f"{width}x{height}", "requests": requests, "warmup": warmup, "unanswered": failures,
            "statuses": {str(k): v for k, v in statuses.items()},
            "round_trip_ms": common.summary(round_trip),
            # The stand-in engine is not free: it averages the image for its text (~1 ms at 1280x720).
            "round_trip_minus_engine_ms": common.summary(without_engine),
            "node_total_ms": common.summary(node_total),
            "engine_ms": common.summary(node_inference),
            "node_idle_cpu_percent": round(idle_rate * 100, 1),
            "node_cpu_ms_per_request": round(
                ((cpu_after - cpu_before) - idle_rate * (wall_after - wall_before)) * 1000 / requests, 2)
            if cpu_before is not None and cpu_after is not None else None,
            "masks_per_result": 1 if with_mask else 0,
        }
    finally:
        if client is not None:
            client.close()
        node.stop()
    if breakdown_path is not None:
        row["node_breakdown"] = json.loads(breakdown_path.read_text()) if breakdown_path.is_file() else None
    return row


def echo_floor(requests: int, warmup: int) -> dict:
    """Round trip of a String through a bare rclpy echo process: the DDS + rclpy floor."""
    import os
    import subprocess
    import threading

    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from lisa_ros.tools.spinning_node import SpinningNode

    namespace = f"/lisa_bench_echo_{os.getpid()}"
    echo = subprocess.Popen([sys.executable, "-P", str(Path(__file__).with_name("echo_node.py")), namespace],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = SpinningNode("lisa_bench_echo_client")
    node = client.node
    arrived: dict[str, float] = {}
    condition = threading.Condition()

    def on_pong(msg):
        with condition:
            arrived[msg.data] = time.perf_counter()
            condition.notify_all()

    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(String, f"{namespace}/pong", on_pong, qos)
    ping = node.create_publisher(String, f"{namespace}/ping", qos)
    try:
        deadline = time.monotonic() + 30
        while (ping.get_subscription_count() < 1 or node.count_publishers(f"{namespace}/pong") < 1
               or not arrived):
            if time.monotonic() > deadline:
                raise RuntimeError("the echo process did not come up")
            ping.publish(String(data="hello"))
            with condition:
                condition.wait(0.2)
        times = []
        for index in range(warmup + requests):
            text = f"ping {index}"
            start = time.perf_counter()
            ping.publish(String(data=text))
            with condition:
                condition.wait_for(lambda text=text: text in arrived, 5.0)
            if index >= warmup and text in arrived:
                times.append((arrived[text] - start) * 1000)
        return {"round_trip_ms": common.summary(times), "requests": requests}
    finally:
        client.close()
        echo.send_signal(2)
        try:
            echo.wait(10)
        except subprocess.TimeoutExpired:
            echo.kill()


def table(rows: list[dict]) -> str:
    return common.markdown_table(
        ["frame", "masks", "requests", "round trip median ms", "round trip p95 ms", "round trip minus engine "
         "median ms", "engine (stand-in) median ms", "node total_ms median", "node total_ms p95",
         "node CPU ms/request (minus idle)", "unanswered"],
        [[r["frame"], r.get("masks_per_result", 1), r["requests"], r["round_trip_ms"].get("median"),
          r["round_trip_ms"].get("p95"), r.get("round_trip_minus_engine_ms", {}).get("median"),
          r["engine_ms"].get("median"), r["node_total_ms"].get("median"), r["node_total_ms"].get("p95"),
          r["node_cpu_ms_per_request"], r["unanswered"]] for r in rows])


def breakdown_table(rows: list[dict]) -> str:
    """Stage medians inside the node (from --breakdown runs)."""
    rows = [r for r in rows if r.get("node_breakdown")]
    if not rows:
        return ""
    stages = list(rows[0]["node_breakdown"]["stage_medians_ms"])
    costs = sorted({k for r in rows for k in r["node_breakdown"]["call_costs"]})
    return common.markdown_table(
        ["frame", "masks"] + stages + [f"{c} (each)" for c in costs],
        [[r["frame"], r["masks_per_result"]] + [r["node_breakdown"]["stage_medians_ms"].get(s) for s in stages]
         + [r["node_breakdown"]["call_costs"].get(c, {}).get("median_ms") for c in costs] for r in rows])


def floor_line(floor: dict) -> str:
    summary = floor["round_trip_ms"]
    return (f"DDS + rclpy floor (String through a bare rclpy echo process, same machine, same run): "
            f"median {summary.get('median')} ms, p95 {summary.get('p95')} ms over {summary.get('n')} round trips.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=3.0,
                        help="how long the node's idle CPU rate is measured before the requests")
    parser.add_argument("--breakdown", action="store_true",
                        help="run the node with timing probes (benchmarks/node_breakdown.py) and report its stages")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    ros_node.require_ros_env()
    before = common.machine()
    rows = []
    for size in args.sizes:
        for with_mask in (True, False):
            print(f"== {size} {'with' if with_mask else 'without'} a mask", flush=True)
            rows.append(measure(*SIZES[size], args.requests, args.warmup, with_mask, args.breakdown,
                                args.idle_seconds))
            print(table(rows[-1:]), flush=True)
            if rows[-1].get("node_breakdown"):
                print(breakdown_table(rows[-1:]), flush=True)
    print("== DDS + rclpy floor: String echo through a bare rclpy process", flush=True)
    floor = echo_floor(args.requests, args.warmup)
    print(f"echo round trip median {floor['round_trip_ms']['median']} ms, p95 {floor['round_trip_ms']['p95']} ms")
    result = {"rows": rows, "echo_floor": floor, "engine": "plumbing, delay_s 0", "machine_start": before,
              "machine_end": common.machine(), "note": args.note}
    path = common.write_result("plumbing_breakdown" if args.breakdown else "plumbing", result, args.out)
    print(f"\n{common.machine_line(before)}\n\n{table(rows)}\n\n{floor_line(floor)}\n\n{breakdown_table(rows)}"
          f"\n\nwritten {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
