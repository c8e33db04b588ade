"""Benchmark 3b: a camera streaming at 30 Hz for several minutes into lisa_node with a slow engine.

``lisa_node`` (own process, ``engine: plumbing`` with ``delay_s`` = ``--engine-delay``)
receives frames at ``--hz`` while instructions arrive every ``--instruction-period``
seconds. Shows: the node's memory stays flat (RSS sampled from /proc every
``--sample-period`` s), frames are dropped rather than queued (the node's
``frames_received`` / ``frames_dropped`` diagnostics: frames replaced by a newer
one before any request used them), and every instruction gets exactly one answer.

    source scripts/ros_env.sh --isolated && python -P benchmarks/stream.py --minutes 3

(``benchmarks/soak.py``, if present, is the reliability engineer's separate soak.)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))

import common  # noqa: E402
import ros_node  # noqa: E402
from lisa_ros.tools.node_process import rss_mb  # noqa: E402


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of RSS (MiB) over time (minutes)."""
    if len(samples) < 3:
        return None
    xs = [t / 60 for t, _ in samples]
    ys = [m for _, m in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var, 3) if var else None


def run(args: argparse.Namespace) -> dict:
    node = ros_node.start_node({
        "engine": "plumbing", "model.delay_s": args.engine_delay, "max_image_age": 2.0,
        "inference_timeout": 30.0, "max_queue": 4, "diagnostics_period": 1.0,
        "max_image_pixels": 4_000_000,
    })
    client = None
    try:
        client = ros_node.Client(node, "lisa_bench_stream")
        client.wait_ready()
        frame = ros_node.image_msg(args.width, args.height)
        period = 1.0 / args.hz
        duration = args.minutes * 60
        start = time.monotonic()
        next_frame = next_sample = start
        next_instruction = start + args.first_instruction_after
        published = 0
        sent: dict[str, float] = {}
        rss: list[tuple[float, float]] = []
        late_frames = 0
        while True:
            now = time.monotonic()
            elapsed = now - start
            if elapsed >= duration:
                break
            if now >= next_frame:
                frame.header.stamp.sec, frame.header.stamp.nanosec = divmod(time.time_ns(), 1_000_000_000)
                client.images.publish(frame)
                published += 1
                next_frame += period
                if now - next_frame > period:  # fell more than a frame behind: do not burst to catch up
                    late_frames += int((now - next_frame) / period)
                    next_frame = now + period
            if now >= next_instruction:
                text = f"segment the cup #{len(sent)}"
                sent[text] = client.ask(text)
                next_instruction += args.instruction_period
            if now >= next_sample:
                value = rss_mb(node.pid)
                if value is not None:
                    rss.append((round(elapsed, 1), round(value, 1)))
                next_sample += args.sample_period
            time.sleep(max(0.0, min(next_frame, next_instruction, next_sample) - time.monotonic()))
        # Let the last answers come in, and one more diagnostics message.
        client.wait(lambda: all(text in client.results for text in sent), 30.0 + 5 * args.engine_delay)
        time.sleep(1.5)
        diagnostics = dict(client.diagnostics)
        answered = {t: client.results[t] for t in sent if t in client.results}
        statuses: dict[str, int] = {}
        latency = []
        for text, (arrived, msg) in answered.items():
            statuses[str(msg.status)] = statuses.get(str(msg.status), 0) + 1
            latency.append((arrived - sent[text]) * 1000)
        duplicates = sum(count - 1 for count in client.result_counts.values() if count > 1)
        steady = [s for s in rss if s[0] >= min(60.0, duration / 3)]  # after start-up allocations
        frames_received = int(diagnostics.get("frames_received", 0))
        frames_dropped = int(diagnostics.get("frames_dropped", 0))
        return {
            "minutes": args.minutes, "hz": args.hz, "frame": f"{args.width}x{args.height}",
            "engine_delay_s": args.engine_delay, "instruction_period_s": args.instruction_period,
            "frames_published": published, "publisher_fell_behind_frames": late_frames,
            "achieved_publish_hz": round(published / duration, 2),
            "frames_received_by_node": frames_received, "frames_dropped_by_node": frames_dropped,
            "frames_used": frames_received - frames_dropped,
            "queue_depth_at_end": diagnostics.get("queue_depth"),
            "instructions_sent": len(sent), "instructions_answered": len(answered),
            "duplicates": duplicates, "statuses": statuses,
            "answer_latency_ms": common.summary(latency),
            "rss_mb_samples": rss,
            "rss_mb": {"first": rss[0][1] if rss else None, "last": rss[-1][1] if rss else None,
                       "max": max(m for _, m in rss) if rss else None,
                       "steady_first": steady[0][1] if steady else None,
                       "steady_last": steady[-1][1] if steady else None,
                       "steady_slope_mb_per_min": slope_mb_per_min(steady)},
            "node_diagnostics_at_end": diagnostics,
            "node_alive_at_end": node.popen.poll() is None,
        }
    finally:
        if client is not None:
            client.close()
        node.stop()


def table(row: dict) -> str:
    r = row["rss_mb"]
    return common.markdown_table(
        ["minutes", "frame @ Hz", "frames published", "received", "dropped", "used", "instructions sent",
         "answered", "statuses", "RSS first/steady-last/max MiB", "RSS slope MiB/min (steady)",
         "answer median ms"],
        [[row["minutes"], f"{row['frame']} @ {row['achieved_publish_hz']}", row["frames_published"],
          row["frames_received_by_node"], row["frames_dropped_by_node"], row["frames_used"],
          row["instructions_sent"], row["instructions_answered"],
          " ".join(f"{k}:{v}" for k, v in sorted(row["statuses"].items())),
          f"{r['first']} / {r['steady_last']} / {r['max']}", r["steady_slope_mb_per_min"],
          row["answer_latency_ms"].get("median")]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--hz", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--engine-delay", type=float, default=0.5, help="seconds per plumbing-engine request")
    parser.add_argument("--instruction-period", type=float, default=1.0)
    parser.add_argument("--first-instruction-after", type=float, default=2.0,
                        help="seconds of streaming before the first instruction (else it may find no frame yet)")
    parser.add_argument("--sample-period", type=float, default=5.0)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    ros_node.require_ros_env()
    before = common.machine()
    row = run(args)
    result = {**row, "machine_start": before, "machine_end": common.machine(), "note": args.note}
    path = common.write_result("stream", result, args.out)
    print(f"\n{common.machine_line(before)}\n\n{table(row)}\n\nwritten {path}")
    return 0 if row["instructions_answered"] == row["instructions_sent"] else 1


if __name__ == "__main__":
    sys.exit(main())
