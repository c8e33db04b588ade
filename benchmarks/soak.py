"""Soak benchmark: lisa_node as a process for N minutes, camera at 30 Hz, steady instructions, over real DDS.

    source scripts/ros_env.sh --isolated && python -P benchmarks/soak.py --minutes 10

The node runs the deterministic plumbing engine with a delay (a slow model, no
GPU needed), so what is measured is the node itself: its memory over time, its
latency percentiles per window, frames received / dropped (replaced before use),
and instructions sent vs answered (by status). Every instruction text is unique,
so answers are matched one to one; lost = sent and never answered.

Writes ``benchmarks/results/soak-<minutes>min.json`` (or ``--out``) and prints a
table. Stability verdict: RSS growth over the second half of the run (linear fit,
MB per 10 min) below ``--max-rss-growth-mb``, the last window's p99 latency within
``--max-p99-ratio`` of the first window's, no instruction lost or answered twice,
and a clean SIGINT exit within 2 s.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parent))
import common  # noqa: E402, F401  (lisa_ros from the source tree when it is not installed)
import ros_node  # noqa: E402
from lisa_ros.core.stats import percentiles  # noqa: E402
from lisa_ros.core.types import Status  # noqa: E402
from lisa_ros.tools.node_process import NodeProcess, rss_mb, thread_count  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="run length (default 10)")
    parser.add_argument("--image-hz", type=float, default=30.0, help="camera rate (default 30)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--instruction-hz", type=float, default=2.0, help="instructions per second (default 2)")
    parser.add_argument("--delay-s", type=float, default=0.2, help="plumbing engine time per request (default 0.2)")
    parser.add_argument("--max-queue", type=int, default=4)
    parser.add_argument("--window-s", type=float, default=60.0, help="latency/RSS window (default 60 s)")
    parser.add_argument("--max-rss-growth-mb", type=float, default=20.0,
                        help="allowed RSS growth over the second half, as MB per 10 min (default 20)")
    parser.add_argument("--max-p99-ratio", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default benchmarks/results/soak-<N>min.json)")
    return parser.parse_args(argv)


def start_node(args, namespace: str) -> NodeProcess:
    return NodeProcess(namespace=namespace, ros_args=["--log-level", "warn"],
                       workdir=Path(tempfile.mkdtemp(prefix="lisa_soak_")),
                       params={"engine": "plumbing", "model.delay_s": args.delay_s, "max_queue": args.max_queue,
                               "inference_timeout": 30.0, "max_image_age": 2.0, "diagnostics_period": 1.0})


class Probe:
    """Publishes frames and instructions, collects results and diagnostics (its own spinning thread)."""

    def __init__(self, namespace: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from lisa_ros.msg import SegmentationResult
        from lisa_ros.tools.spinning_node import SpinningNode

        self._spinning = SpinningNode("lisa_soak_probe")
        self.node = self._spinning.node
        self.lock = threading.Lock()
        self.results: list[tuple[float, object]] = []
        self.diagnostics: dict[str, str] = {}
        name = f"{namespace}/lisa_node: segmentation"
        reliable = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)

        def on_result(msg):
            with self.lock:
                self.results.append((time.monotonic(), msg))

        def on_diagnostics(msg):
            for status in msg.status:
                if status.name == name:
                    self.diagnostics = {kv.key: kv.value for kv in status.values} | {"_message": status.message}

        self.node.create_subscription(SegmentationResult, f"{namespace}/lisa_node/result", on_result, reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        self.images = self.node.create_publisher(Image, f"{namespace}/image", 1)
        self.instructions = self.node.create_publisher(String, f"{namespace}/instruction", reliable)

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.instructions.get_subscription_count() and self.images.get_subscription_count()
                    and self.diagnostics.get("_message") == "active"):
                return True
            time.sleep(0.1)
        return False

    def close(self):
        self._spinning.close()


def latency_summary(values) -> dict:
    found = percentiles(values)
    if found is None:
        return {"count": 0}
    return {"count": len(values), **{f"p{q}_ms": round(v, 1) for q, v in found.items()},
            "max_ms": round(float(max(values)), 1)}


def run(args) -> dict:
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    ros_node.require_ros_env()
    namespace = f"/lisa_soak_{os.getpid()}"
    process = start_node(args, namespace)
    probe = Probe(namespace)
    if not probe.wait_ready(60):
        process.stop(signal.SIGKILL)
        sys.exit(f"the node did not become active; log:\n{process.log[-3000:]}")

    frame = Image(width=args.width, height=args.height, encoding="rgb8", step=args.width * 3)
    frame.data = (np.arange(args.width * args.height * 3) % 251).astype(np.uint8).tobytes()
    frame.header.frame_id = "soak_camera"
    duration = args.minutes * 60.0
    sent: dict[str, float] = {}
    samples = []  # (t, rss_mb, threads, frames_received, frames_dropped, queue_depth)
    frames_published = 0
    started = time.monotonic()
    next_frame = next_instruction = next_sample = started
    print(f"soak: {args.minutes} min, {args.width}x{args.height} rgb8 at {args.image_hz} Hz, "
          f"{args.instruction_hz} instructions/s, engine delay {args.delay_s} s, node pid {process.pid}", flush=True)
    while True:
        now = time.monotonic()
        if now - started >= duration or process.poll() is not None:
            break
        if now >= next_frame:
            frames_published += 1
            frame.header.stamp.sec = frames_published
            probe.images.publish(frame)
            next_frame += 1.0 / args.image_hz
        if now >= next_instruction:
            text = f"soak {len(sent) + 1}: the cup and the plate"
            sent[text] = time.monotonic()
            probe.instructions.publish(String(data=text))
            next_instruction += 1.0 / args.instruction_hz
        if now >= next_sample:
            d = probe.diagnostics
            samples.append((now - started, rss_mb(process.pid), thread_count(process.pid),
                            int(d.get("frames_received", 0)), int(d.get("frames_dropped", 0)),
                            int(d.get("queue_depth", 0))))
            next_sample += 1.0
            if len(samples) % 60 == 0:
                print(f"  {samples[-1][0] / 60:5.1f} min: RSS {samples[-1][1]:.1f} MB, sent {len(sent)}, "
                      f"answered {len(probe.results)}", flush=True)
        time.sleep(max(0.0, min(next_frame, next_instruction, next_sample) - time.monotonic()))
    crashed = process.poll() is not None
    time.sleep(min(5.0, args.delay_s * (args.max_queue + 2) + 1.0))  # let the last answers arrive
    final_diagnostics = dict(probe.diagnostics)
    exit_s = process.stop()  # SIGINT, as a terminal's Ctrl-C (0 s when it had crashed)
    with probe.lock:
        results = list(probe.results)
    probe.close()
    return summarise(args, sent, results, samples, frames_published, final_diagnostics, crashed,
                     process.returncode, exit_s, process.log, started)


def summarise(args, sent, results, samples, frames_published, diagnostics, crashed, exit_code, exit_s,
              node_log, started) -> dict:
    answers = collections.defaultdict(list)
    for received_at, msg in results:
        answers[msg.instruction].append((received_at, msg))
    lost = [t for t in sent if t not in answers]
    duplicates = {t: len(a) for t, a in answers.items() if len(a) > 1}
    statuses = collections.Counter(Status.name_of(a[0][1].status) for a in answers.values())
    window = args.window_s
    windows = []
    count = max(1, int(np.ceil(args.minutes * 60.0 / window)))
    for index in range(count):
        low, high = index * window, (index + 1) * window
        latencies = [1000.0 * (a[0][0] - sent[t]) for t, a in answers.items()
                     if t in sent and low <= sent[t] - started < high and a[0][1].status == 0]
        node_total = [a[0][1].total_ms for t, a in answers.items()
                      if t in sent and low <= sent[t] - started < high and a[0][1].status == 0]
        in_window = [s for s in samples if low <= s[0] < high and s[1] is not None]
        windows.append({
            "window": f"{low / 60:g}-{high / 60:g} min",
            "sent": sum(1 for t in sent if low <= sent[t] - started < high),
            "ok": len(latencies),
            "latency_client": latency_summary(latencies),
            "latency_node_total": latency_summary(node_total),
            "rss_mb_median": round(float(np.median([s[1] for s in in_window])), 1) if in_window else None,
            "rss_mb_max": round(float(max(s[1] for s in in_window)), 1) if in_window else None,
        })
    rss = [(s[0], s[1]) for s in samples if s[1] is not None]
    second_half = [(t, m) for t, m in rss if t >= rss[-1][0] / 2] if rss else []
    slope_per_10min = None
    if len(second_half) >= 10:
        t, m = np.array(second_half).T
        slope_per_10min = float(np.polyfit(t, m, 1)[0] * 600.0)
    first_p99 = windows[0]["latency_client"].get("p99_ms")
    last_p99 = windows[-1]["latency_client"].get("p99_ms")
    received = int(diagnostics.get("frames_received", 0))
    dropped = int(diagnostics.get("frames_dropped", 0))
    verdict = {
        "no_crash": not crashed,
        "no_lost_instructions": not lost,
        "no_duplicate_answers": not duplicates,
        "rss_flat": slope_per_10min is not None and slope_per_10min < args.max_rss_growth_mb,
        "latency_stable": bool(first_p99 and last_p99 and last_p99 <= args.max_p99_ratio * first_p99),
        "clean_sigint_exit_within_2s": exit_code == 0 and exit_s < 2.0,
    }
    report = {
        "benchmark": "soak",
        "generated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "rmw": os.environ.get("RMW_IMPLEMENTATION", ""), "dds": "Fast DDS, loopback profile"},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "instructions": {"sent": len(sent), "answered": len(answers), "lost": len(lost),
                         "duplicates": len(duplicates), "by_status": dict(statuses), "lost_examples": lost[:10]},
        "frames": {"published": frames_published, "received_by_node": received,
                   "not_received": frames_published - received, "dropped_unused_by_node": dropped,
                   "note": "best-effort images: 'not received' were lost in transport or replaced in the depth-1 "
                           "queue; 'dropped' were received and replaced by a newer frame before any instruction "
                           "used them (the newest-frame policy)"},
        "rss_mb": {"first": rss[0][1] if rss else None, "last": rss[-1][1] if rss else None,
                   "min": min(m for _, m in rss) if rss else None, "max": max(m for _, m in rss) if rss else None,
                   "second_half_slope_mb_per_10min": None if slope_per_10min is None else round(slope_per_10min, 2)},
        "threads": {"first": samples[0][2] if samples else None, "last": samples[-1][2] if samples else None},
        "windows": windows,
        "node_exit": {"crashed": crashed, "exit_code": exit_code, "sigint_exit_s": round(exit_s, 2)},
        "verdict": verdict,
        "passed": all(verdict.values()),
        "samples": [{"t_s": round(s[0], 1), "rss_mb": s[1], "threads": s[2], "frames_received": s[3],
                     "frames_dropped": s[4], "queue_depth": s[5]} for s in samples[::5]],
    }
    if crashed:
        report["node_log_tail"] = node_log[-3000:]
    return report


def print_table(report: dict) -> None:
    i, f = report["instructions"], report["frames"]
    print(f"\ninstructions: sent {i['sent']}, answered {i['answered']}, lost {i['lost']}, duplicates "
          f"{i['duplicates']}, by status {i['by_status']}")
    print(f"frames: published {f['published']}, received by node {f['received_by_node']}, dropped unused "
          f"{f['dropped_unused_by_node']}")
    r = report["rss_mb"]
    print(f"node RSS: first {r['first']:.1f} MB, last {r['last']:.1f} MB, min {r['min']:.1f}, max {r['max']:.1f}, "
          f"second-half slope {r['second_half_slope_mb_per_10min']} MB/10 min; threads {report['threads']}")
    print("\n| window | sent | OK | p50 ms | p90 ms | p99 ms | max ms | node p50 ms | RSS median MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w in report["windows"]:
        c, n = w["latency_client"], w["latency_node_total"]
        print(f"| {w['window']} | {w['sent']} | {w['ok']} | {c.get('p50_ms', '-')} | {c.get('p90_ms', '-')} | "
              f"{c.get('p99_ms', '-')} | {c.get('max_ms', '-')} | {n.get('p50_ms', '-')} | {w['rss_mb_median']} |")
    print(f"\nexit: {report['node_exit']}")
    print(f"verdict: {report['verdict']} -> {'PASS' if report['passed'] else 'FAIL'}")


def main(argv=None) -> int:
    args = parse_args(argv)
    report = run(args)
    out = args.out or REPO / "benchmarks" / "results" / f"soak-{args.minutes:g}min.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print_table(report)
    print(f"\nwritten {out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
