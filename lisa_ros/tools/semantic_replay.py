"""``lisa-ros replay --semantic CATS``: every frame of a bag through ``~/segment_semantic``, outputs recorded.

Lock-step only: each frame travels inside its service request, so an answer always
belongs to the frame it was asked on (no pairing, no retries). The frame is also
published on the node's image topic and written to the output bag with the response.
Per frame: one label PNG (8-bit up to 255 categories, 16-bit beyond) in ``labels/``
and one ``"mode": "semantic"`` line in results.jsonl, which ``lisa-ros eval
--gt-labels`` scores.
"""
from __future__ import annotations

import argparse
import collections
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from lisa_ros.core.image import image_message_to_rgb
from lisa_ros.core.stats import median_p95
from lisa_ros.core.types import Status
from lisa_ros.tools import bag_io
from lisa_ros.tools.bag_io import BagError
from lisa_ros.tools.replay_common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURES,
    EXIT_INTERRUPTED,
    EXIT_NO_NODE,
    NO_RESULT,
    node_image_topic,
    resolve_image_topic,
)
from lisa_ros.tools.results_folder import ResultsFolder, frame_name

SEMANTIC_RESULT = "lisa_ros/msg/SemanticSegmentation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("semantic mode (instead of instructions)")
    group.add_argument("--semantic", metavar="CAT,CAT,...",
                       help="call ~/segment_semantic on every frame with these comma-separated categories")
    group.add_argument("--semantic-file", help="like --semantic, one category per line ('#' comments)")


def wanted(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "semantic", None) or getattr(args, "semantic_file", None))


def read_categories(args: argparse.Namespace) -> list[str]:
    """The category list as given; the node judges it (duplicates, specials...) and answers with a status."""
    if args.semantic and args.semantic_file:
        raise ValueError("pass --semantic or --semantic-file, not both")
    if args.semantic_file:
        lines = Path(args.semantic_file).read_text(encoding="utf-8").splitlines()
        names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    else:
        names = [name.strip() for name in args.semantic.split(",") if name.strip()]
    if not names:
        raise ValueError("the category list is empty")
    return names


def label_array(msg) -> np.ndarray:
    """mono8 -> uint8, 16UC1 -> uint16 (H, W), honouring step and byte order."""
    dtype = {"mono8": np.dtype("u1"), "16UC1": np.dtype(">u2" if msg.is_bigendian else "<u2")}.get(msg.encoding)
    if dtype is None:
        raise ValueError(f"label image encoding {msg.encoding!r} (expected mono8 or 16UC1)")
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    return rows[:, : msg.width * dtype.itemsize].copy().view(dtype).astype(dtype.newbyteorder("="))


def finite_or_none(values) -> list[float | None]:
    return [None if math.isnan(v) else round(float(v), 4) for v in values]


def record_of(result, label_file: str | None, round_trip_ms: float) -> dict:
    """The results line of one response (its frame fields are added by the caller)."""
    return {
        "mode": "semantic", "status": Status.name_of(result.status), "status_code": int(result.status),
        "status_message": result.status_message, "request_id": result.request_id,
        "answered_stamp_ns": bag_io.stamp_ns(result.header), "label": label_file,
        "label_ids": [int(i) for i in result.label_ids], "label_names": list(result.label_names),
        "scores": [round(float(s), 4) for s in result.scores], "presence": finite_or_none(result.presence),
        "pixel_fractions": [round(float(f), 6) for f in result.pixel_fractions],
        "filtered_out": list(result.filtered_out), "filtered_reasons": list(result.filtered_reasons),
        "descriptions": list(result.descriptions), "description_sources": list(result.description_sources),
        "timings_ms": {n: round(float(v), 2) for n, v in zip(result.timing_names, result.timing_ms)},
        "queue_wait_ms": round(float(result.queue_wait_ms), 2), "inference_ms": round(float(result.inference_ms), 2),
        "total_ms": round(float(result.total_ms), 2), "round_trip_ms": round(round_trip_ms, 2),
        "model_id": result.model_id,
    }


class NodeUnavailable(RuntimeError):
    """No node serves ~/segment_semantic (or the one started died)."""


class SemanticLink:
    """The ~/segment_semantic client and the frame publisher (rclpy only here)."""

    def __init__(self, node_name: str, image_topic: str):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from lisa_ros.srv import SegmentSemantic
        from lisa_ros.tools.spinning_node import SpinningNode

        self._srv = SegmentSemantic
        self._spinning = SpinningNode("lisa_semantic_replay")
        node = self._spinning.node
        self.service = f"/{node_name.strip('/')}/segment_semantic"
        self.client = node.create_client(SegmentSemantic, self.service)
        self.image_pub = node.create_publisher(Image, image_topic, QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST))

    def wait(self, timeout_s: float, process=None) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.client.wait_for_service(timeout_sec=0.1):
            if process is not None and process.poll() is not None:
                raise NodeUnavailable(f"the lisa_node process exited with code {process.returncode} "
                                      "before it was ready")
            if time.monotonic() > deadline:
                raise NodeUnavailable(f"no {self.service} service within {timeout_s:.0f} s: start a lisa_node "
                                   "or pass --start-node")

    def call(self, image_data: bytes, categories: list[str], timeout_s: float):
        """The response's SemanticSegmentation, or None when none came within ``timeout_s``."""
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import Image

        image = deserialize_message(image_data, Image)
        self.image_pub.publish(image)
        future = self.client.call_async(self._srv.Request(image=image, categories=categories))
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.005)  # the spinning thread completes the future
        if not future.done():
            self.client.remove_pending_request(future)
            return None
        return future.result().result

    def close(self) -> None:
        self._spinning.close()


def ask_until_ready(link: SemanticLink, data: bytes, categories: list[str], args, deadline: float):
    """A node that just started answers NOT_READY until it is active: ask again until --wait-for-node is up."""
    while True:
        started = time.monotonic()
        result = link.call(data, categories, args.result_timeout)
        if result is None or result.status != Status.NOT_READY or time.monotonic() > deadline:
            return result, (time.monotonic() - started) * 1e3
        time.sleep(0.1)


def check_frames(bag: bag_io.InputBag, image_topic: str) -> None:
    """Every frame decodes, before any node is started or called (BagError names the first that does not)."""
    count = 0
    for index, (_, msg) in enumerate(bag.messages(image_topic)):
        try:
            image_message_to_rgb(msg)
        except ValueError as err:
            raise BagError(f"bag {bag.path}: frame {index} on {image_topic!r} is unusable: {err}") from None
        count += 1
    if not count:
        raise BagError(f"bag {bag.path}: topic {image_topic!r} has no messages")


def run(args: argparse.Namespace) -> int:
    results_root = Path(args.output)
    if results_root.exists() and any(results_root.iterdir()):
        print(f"error: {results_root} exists and is not empty; choose another --output", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.rate is not None or args.instruction or args.instructions_file or args.instruction_topic:
        print("error: --semantic replays lock-step over every frame; it takes no --rate or instructions",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        categories = read_categories(args)
        with bag_io.InputBag(args.bag) as bag:
            image_topic, image_type = resolve_image_topic(bag, args.image_topic)
            check_frames(bag, image_topic)
            return semantic_replay(bag, image_topic, image_type, categories, args, results_root)
    except (BagError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


def semantic_replay(bag, image_topic: str, image_type: str, categories: list[str], args,
                    results_root: Path) -> int:
    from rclpy.serialization import serialize_message

    from lisa_ros.tools import ros_link

    image_in = args.publish_image or node_image_topic(image_topic, image_type)  # frames go raw: no /compressed
    process = link = output = results = None
    records, code, interrupted = [], 0, False
    try:
        if args.start_node:
            process = ros_link.start_node(args.node_name, image_in, args.publish_instruction or "/instruction",
                                          args.node_params, args.node_param)
        link = SemanticLink(args.node_name, image_in)
        link.wait(args.wait_for_node, process)
        ready_deadline = time.monotonic() + args.wait_for_node
        results = ResultsFolder(results_root)
        (results_root / "labels").mkdir(exist_ok=True)
        output = bag_io.OutputBag(results_root / "bag", args.output_storage)
        output.add_topic(image_in, bag_io.IMAGE)
        output.add_topic(link.service + "/response", SEMANTIC_RESULT)
        seen_stamps: collections.Counter = collections.Counter()
        print(f"semantic replay of {image_topic}: {len(categories)} categories via {link.service}", file=sys.stderr)
        for index, (_, msg) in enumerate(bag.messages(image_topic)):
            try:
                image = image_message_to_rgb(msg)
            except ValueError as err:
                raise BagError(f"bag {bag.path}: frame {index} on {image_topic!r} is unusable: {err}") from None
            raw = bag_io.raw_image_msg(image, msg.header)  # the service takes sensor_msgs/Image only
            data = bytes(bag_io.typestore().serialize_cdr(raw, bag_io.IMAGE))
            output.write_raw(image_in, time.time_ns(), data)
            result, round_trip = ask_until_ready(link, data, categories, args, ready_deadline)
            stamp = bag_io.stamp_ns(msg.header)
            frame = {"request": index, "frame_index": index, "frame_name": frame_name(stamp),
                     "frame_occurrence": seen_stamps[stamp], "frame_id": msg.header.frame_id,
                     "image_size": list(image.shape[:2]), "frame": results.save_frame(index, stamp, image)}
            seen_stamps[stamp] += 1
            if result is None:
                record = {"mode": "semantic", "status": NO_RESULT, "label": None,
                          "status_message": "no answer within --result-timeout"}
            else:
                output.write_raw(link.service + "/response", time.time_ns(), serialize_message(result))
                label_file = None
                if result.label.width and result.label.height:
                    label_file = f"labels/{index:05d}_{frame_name(stamp)}.png"
                    cv2.imwrite(str(results_root / label_file), label_array(result.label))
                record = record_of(result, label_file, round_trip)
            records.append({**frame, **record})
            results.append(records[-1])
    except KeyboardInterrupt:
        interrupted, code = True, EXIT_INTERRUPTED
    except BagError as err:
        print(f"error: {err}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    except NodeUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        code = EXIT_NO_NODE
    finally:
        if output is not None:
            output.close()
        if results is not None:
            statuses = collections.Counter(r["status"] for r in records)
            failures = sum(n for s, n in statuses.items() if not Status.is_answered(s))
            summary = {"mode": "semantic", "requests": len(records), "failures": failures, "statuses": dict(statuses),
                       "categories": categories, "interrupted": interrupted,
                       "latency_ms": median_p95([r["total_ms"] for r in records if "total_ms" in r]),
                       "round_trip_ms": median_p95([r["round_trip_ms"] for r in records if "round_trip_ms" in r])}
            results.write_summary(summary)
            results.close()
            print(f"semantic replay {'INTERRUPTED' if interrupted else 'done'}: {len(records)} frames, "
                  f"{failures} failed; statuses: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
            print(f"  results: {results_root}/results.jsonl (labels/), output bag: {results_root / 'bag'}")
            if code == 0 and args.fail_on_error and failures:
                code = EXIT_FAILURES
        if link is not None:
            link.close()
        if process is not None:
            process.stop()
    return code
