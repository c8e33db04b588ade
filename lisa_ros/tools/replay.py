"""``lisa-ros replay``: play a rosbag2 into a lisa_node over ROS 2 and record its answers.

Two pacings: lock-step (default: each instruction is sent right after its frame
and the next one only once the answer is in, so results do not depend on machine
speed) and ``--rate R`` (the recorded timing, R times faster). Everything sent
and received goes into an output rosbag2; answers also go into a results folder
(see results_folder.py) that ``lisa-ros eval`` scores.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import queue
import signal
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lisa_ros.core.image import image_message_to_rgb
from lisa_ros.core.stats import median_p95
from lisa_ros.core.types import Status
from lisa_ros.tools import bag_io, depth_replay, schedule, semantic_replay
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

HEADER_MISMATCH = "HEADER_MISMATCH"
# Lock-step asks again when the node did not get (or no longer had) the frame just sent.
RETRIED = {Status.NO_IMAGE.name, Status.STALE_IMAGE.name, HEADER_MISMATCH}
KEPT_FRAMES = 256  # frames kept for the overlays of answers still to come (timed replay)
TARGETS_WAIT_S = 5.0  # for an answer's ~/targets_3d after its result (the node's 3D step: ms, 0.25 s at most waiting)


class NodeExited(RuntimeError):
    """The node started by the replay stopped before the replay was done."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="rosbag2 directory (sqlite3 or mcap), or one bare .mcap or .db3 file")
    parser.add_argument("--output", "-o", required=True,
                        help="results folder to create (holds results.jsonl, masks/, overlays/, bag/)")
    parser.add_argument("--output-storage", choices=["mcap", "sqlite3"], default="mcap",
                        help="storage of the output bag (default mcap, zstd-compressed chunks; sqlite3 uncompressed)")
    source = parser.add_argument_group("what to replay")
    source.add_argument("--image-topic", help="image topic in the bag (Image or CompressedImage); "
                        "default: the only one outside /ground_truth/ (an Image topic with 'depth' in its name "
                        "beside it is the depth stream)")
    source.add_argument("--instruction-topic",
                        help="std_msgs/String topic in the bag; default /instruction when the bag has it")
    source.add_argument("--instruction", help="send this instruction instead (on every --every'th frame)")
    source.add_argument("--every", type=int, default=1, metavar="N",
                        help="with --instruction: every Nth frame (default 1)")
    source.add_argument("--instructions-file",
                        help="file of 'SECONDS INSTRUCTION' lines, seconds after the first frame")
    pacing = parser.add_argument_group("pacing")
    pacing.add_argument("--rate", type=float, help="play with the recorded timing scaled by RATE (default: lock-step)")
    pacing.add_argument("--result-timeout", type=float, default=120.0, help="s to wait for each answer (default 120)")
    pacing.add_argument("--settle", type=float, default=0.05, help="s from a frame to its instruction (default 0.05)")
    pacing.add_argument("--attempts", type=int, default=3,
                        help="lock-step: tries when the node answers on another frame or none (default 3)")
    node = parser.add_argument_group("the node")
    node.add_argument("--node-name", default="lisa_node",
                      help="node whose ~/result etc. are recorded (default lisa_node)")
    node.add_argument("--publish-image", help="the node's image topic (default: the bag's, /compressed dropped); "
                      "compressed frames go to <this>/compressed")
    node.add_argument("--decompress", action="store_true", help="publish compressed frames as raw sensor_msgs/Image "
                      "(for a node without `compressed: true`)")
    node.add_argument("--publish-instruction",
                      help="the node's instruction topic (default: the bag's, or /instruction); the replay publishes "
                      "lisa_ros/Instruction on <this>/structured and matches answers by request_id")
    node.add_argument("--start-node", action="store_true", help="start a lisa_node remapped onto these topics")
    node.add_argument("--node-params", help="with --start-node: parameters YAML file")
    node.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                      help="with --start-node: one parameter (repeatable)")
    node.add_argument("--wait-for-node", type=float, default=60.0, help="s to wait for the node to appear (default 60)")
    node.add_argument("--delay", type=float, default=0.5, help="s between finding the node and the first message, for "
                      "discovery to finish on the node's side too (a frame it cannot match yet is lost; default 0.5)")
    semantic_replay.add_arguments(parser)
    depth_replay.add_arguments(parser)
    parser.add_argument("--fail-on-error", action="store_true",
                        help="exit 1 if any request failed (no answer, error status, wrong frame)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@dataclasses.dataclass(frozen=True)
class Pacing:
    """How the replay sends: lock-step (``rate`` None) or the recorded timing scaled by ``rate``."""

    rate: float | None
    settle_s: float  # from a frame to its instruction: they travel on different topics
    result_timeout_s: float  # for each answer (lock-step), for the last ones (timed)
    attempts: int  # lock-step: tries when the node answers on another frame or none

    @property
    def lock_step(self) -> bool:
        return self.rate is None

    def describe(self) -> str:
        return "lock-step" if self.lock_step else f"rate {self.rate}"


@dataclasses.dataclass
class Plan:
    """What the replay will send, checked against the bag before anything is published."""

    image_topic: str
    image_type: str
    frame_times_ns: list[int]
    requests: list[schedule.ScheduledInstruction]


def make_plan(bag: bag_io.InputBag, args: argparse.Namespace) -> Plan:
    """Check every frame and bind the instructions to frames; BagError/ValueError name the problem."""
    image_topic, image_type = resolve_image_topic(bag, args.image_topic)
    frame_times = []
    for index, (timestamp, msg) in enumerate(bag.messages(image_topic)):
        try:
            image_message_to_rgb(msg)
        except ValueError as err:
            raise BagError(f"bag {bag.path}: frame {index} on {image_topic!r} is unusable: {err}") from None
        frame_times.append(timestamp)
    if not frame_times:
        raise BagError(f"bag {bag.path}: topic {image_topic!r} has no messages")
    if args.instruction:
        requests = schedule.every_nth_frame(frame_times, args.instruction, args.every)
    elif args.instructions_file:
        timed = schedule.read_instruction_file(args.instructions_file, frame_times[0])
        requests = schedule.bind_to_frames(frame_times, timed)
    else:
        topic = args.instruction_topic or "/instruction"
        if args.instruction_topic is None and topic not in bag.topics:
            raise BagError(f"bag {bag.path} has no /instruction topic; pass --instruction-topic, --instruction or "
                           "--instructions-file")
        bag.require_topic(topic, (bag_io.STRING,))
        timed = [(timestamp, msg.data) for timestamp, msg in bag.messages(topic)]
        requests = schedule.bind_to_frames(frame_times, timed)
    if not requests:
        raise BagError(f"bag {bag.path}: no instructions to send")
    return Plan(image_topic, image_type, frame_times, requests)


@dataclasses.dataclass
class ReplayAnswer:
    """A result matched to its request, not yet written to the results folder."""

    request: schedule.ScheduledInstruction
    frame_index: int
    fields: dict
    masks: list[np.ndarray]
    received: float = 0.0  # time.monotonic() when the result came

    @property
    def request_id(self) -> str:
        return self.fields["request_id"]


class Session:
    """One replay: sends frames and instructions, writes the bag and the results folder.

    Frames are known by their index in the bag, not by their stamp: a camera with a coarse or
    frozen clock sends different pixels under one stamp, and each must keep its own image.
    """

    def __init__(self, link, output: bag_io.OutputBag, results: ResultsFolder, lock_step: bool, node_process=None):
        self.link, self.output, self.results, self.lock_step = link, output, results, lock_step
        self.node_process = node_process
        self.image_topic, self.image_type = link.image_pub.topic_name, link.image_type
        self.depth_feed: depth_replay.DepthFeed | None = None  # depth frames sent before their colour frame
        self.targets_topic: str | None = None  # the node's ~/targets_3d, when it measures the depth sent
        self.targets: dict[str, dict] = {}  # request_id -> its ~/targets_3d (depth_replay.targets_record)
        self.parked: dict[str, ReplayAnswer] = {}  # timed replay: answers with masks waiting for their ~/targets_3d
        self.instruction_topic = link.instruction_pub.topic_name
        # frame index -> image message as published: the newest, and those pending answers refer to
        self.frames: collections.OrderedDict[int, object] = collections.OrderedDict()
        self._indices_by_stamp: dict[int, set[int]] = collections.defaultdict(set)  # frames sent, by stamp
        # request_id -> (request, frame index, send time): answers are matched by the id they echo
        self.pending: dict[str, tuple[schedule.ScheduledInstruction, int, float]] = {}
        self._request_ids = itertools.count(1)
        self.answers: list[ReplayAnswer] = []  # lock-step: answers the replay loop has not judged yet
        self.records: list[dict] = []
        output.add_topic(self.image_topic, self.image_type)
        output.add_topic(self.instruction_topic, bag_io.INSTRUCTION)

    def send_frame(self, index: int, msg) -> None:
        self.frames[index] = msg
        self.frames.move_to_end(index)
        self._indices_by_stamp[bag_io.stamp_ns(msg.header)].add(index)
        if self.depth_feed is not None:
            self.depth_feed.up_to(bag_io.stamp_ns(msg.header))
        waiting = {frame_index for _, frame_index, _ in self.pending.values()}
        waiting |= {answer.frame_index for answer in self.parked.values()}
        for old in [i for i in self.frames if i not in waiting][: max(len(self.frames) - KEPT_FRAMES, 0)]:
            del self.frames[old]
        data = bytes(bag_io.typestore().serialize_cdr(msg, self.image_type))
        self.link.image_pub.publish(data)
        self.output.write_raw(self.image_topic, time.time_ns(), data)

    def occurrence(self, index: int) -> int:
        """0 for the bag's first frame with this frame's stamp, 1 for the second, ... (frames go in bag order)."""
        stamp = bag_io.stamp_ns(self.frames[index].header)
        return sum(1 for other in self._indices_by_stamp[stamp] if other < index)

    def send_instruction(self, request: schedule.ScheduledInstruction, frame_index: int) -> None:
        """As a lisa_ros/Instruction with an id of this replay's own (each attempt its own id)."""
        request_id = f"replay-{request.index}-{next(self._request_ids)}"
        msg = bag_io.typestore().types[bag_io.INSTRUCTION](
            header=self.frames[frame_index].header if frame_index in self.frames else bag_io.header(0, ""),
            request_id=request_id, conversation_id="",
            text=request.instruction, reset_conversation=False)
        data = bytes(bag_io.typestore().serialize_cdr(msg, bag_io.INSTRUCTION))
        self.pending[request_id] = (request, frame_index, time.monotonic())
        self.link.instruction_pub.publish(data)
        self.output.write_raw(self.instruction_topic, time.time_ns(), data)

    def drain(self, timeout_s: float) -> int:
        """Record what the node sent within ``timeout_s``; returns how many results came."""
        if self.node_process is not None and self.node_process.poll() is not None:
            raise NodeExited(f"the lisa_node process exited with code {self.node_process.returncode} "
                             "(see its log above)")
        deadline, results = time.monotonic() + timeout_s, 0
        while True:
            try:
                received = self.link.received.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                return results
            topic, msgtype, received_ns, data = received
            self.output.add_topic(topic, msgtype)
            self.output.write_raw(topic, received_ns, data)
            if topic == self.link.result_topic:
                self._on_result(bag_io.typestore().deserialize_cdr(data, bag_io.RESULT))
                results += 1
            elif topic == self.targets_topic:
                targets = bag_io.typestore().deserialize_cdr(data, depth_replay.TARGETS_3D)
                self.targets[targets.request_id] = depth_replay.targets_record(targets)
                if targets.request_id in self.parked:
                    self.finish(self.parked.pop(targets.request_id))
            self.finish_parked(time.monotonic() - TARGETS_WAIT_S)
            if time.monotonic() >= deadline:
                return results

    def wants_targets(self, answer: ReplayAnswer) -> bool:
        """The node measures the depth sent and publishes ~/targets_3d for every answer with masks."""
        return self.targets_topic is not None and bool(answer.masks)

    def wait_for_targets(self, answer: ReplayAnswer) -> None:
        """Lock-step: take the answer's ~/targets_3d (it follows the result) before moving on."""
        deadline = answer.received + TARGETS_WAIT_S
        while self.wants_targets(answer) and answer.request_id not in self.targets and time.monotonic() < deadline:
            self.drain(min(0.05, max(deadline - time.monotonic(), 0.001)))

    def finish_parked(self, received_before: float = float("inf")) -> None:
        """Write the parked answers whose result came before ``received_before``, with or without targets."""
        for request_id in [r for r, answer in self.parked.items() if answer.received < received_before]:
            self.finish(self.parked.pop(request_id))

    def _on_result(self, result) -> None:
        """Match the answer to its request by the id it echoes."""
        match = self.pending.pop(result.request_id, None)
        if match is None:
            return  # an answer to someone else's instruction: recorded in the bag only
        request, frame_index, sent = match
        answered_stamp = bag_io.stamp_ns(result.header)
        if not self.lock_step:  # timed replay: the node answers on the newest frame it has
            frame_index = max((i for i in self._indices_by_stamp.get(answered_stamp, ()) if i in self.frames),
                              default=frame_index)
        status = Status.name_of(result.status)
        source_header = self.frames[frame_index].header
        if Status.is_answered(status) and (answered_stamp, result.header.frame_id) != (bag_io.stamp_ns(source_header),
                                                                                source_header.frame_id):
            status = HEADER_MISMATCH
        masks = bag_io.result_masks(result)
        answer = ReplayAnswer(request, frame_index, {
            "request_id": result.request_id,
            "status": status,
            "status_code": int(result.status),
            "status_message": result.status_message,
            "explanation": result.explanation,
            "answered_stamp_ns": answered_stamp,
            "answered_frame_id": result.header.frame_id,
            "scores": [round(float(s), 4) for s in result.scores],
            "mask_sizes": [list(m.shape) for m in masks],
            "queue_wait_ms": round(float(result.queue_wait_ms), 2),
            "inference_ms": round(float(result.inference_ms), 2),
            "total_ms": round(float(result.total_ms), 2),
            "round_trip_ms": round((time.monotonic() - sent) * 1e3, 2),
            "model_id": result.model_id,
        }, masks, time.monotonic())
        if self.lock_step:
            self.answers.append(answer)
        elif self.wants_targets(answer) and answer.request_id not in self.targets:
            self.parked[answer.request_id] = answer
        else:
            self.finish(answer)

    def finish(self, answer: ReplayAnswer) -> None:
        """Write the answer's masks, overlay and JSONL line (with its 3D targets, None when they did not come)."""
        image = image_message_to_rgb(self.frames[answer.frame_index])
        mask_files, overlay_file = self.results.save_answer(answer.request.index, image, answer.masks)
        targets = {"targets_3d": self.targets.pop(answer.request_id, None)} if self.wants_targets(answer) else {}
        self._add_record(answer.request, answer.frame_index,
                         {**answer.fields, "masks": mask_files, "overlay": overlay_file, **targets})

    def give_up_pending(self) -> None:
        for request, frame_index, _ in self.pending.values():
            self._add_record(request, frame_index,
                             {"status": NO_RESULT, "status_message": "no answer within --result-timeout"})
        self.pending.clear()

    def _add_record(self, request: schedule.ScheduledInstruction, frame_index: int, fields: dict) -> None:
        frame_msg = self.frames[frame_index]
        stamp = bag_io.stamp_ns(frame_msg.header)
        image = image_message_to_rgb(frame_msg)
        record = {
            "request": request.index,
            "instruction": request.instruction,
            "frame_index": frame_index,
            "frame_name": frame_name(stamp),
            "frame_occurrence": self.occurrence(frame_index),
            "frame_id": frame_msg.header.frame_id,
            "image_size": list(image.shape[:2]),
            "frame": self.results.save_frame(frame_index, stamp, image),
            **fields,
        }
        self.records.append(record)
        self.results.append(record)


def frames_to_publish(bag: bag_io.InputBag, plan: Plan, decompress: bool):
    """(index, bag time, image message) for every frame; compressed ones decoded with ``decompress``."""
    for index, (timestamp, msg) in enumerate(bag.messages(plan.image_topic)):
        if decompress and plan.image_type == bag_io.COMPRESSED_IMAGE:
            msg = bag_io.raw_image_msg(image_message_to_rgb(msg), msg.header)
        yield index, timestamp, msg


def ask_lock_step(session: Session, index: int, msg, request: schedule.ScheduledInstruction, pacing: Pacing) -> None:
    """Frame, then instruction, then wait for the answer; again when the node did not answer on that frame.

    The node takes camera frames best effort and keeps only the newest, so a frame
    can be lost or overtaken by the instruction; each attempt re-sends the frame.
    Every attempt stays in the output bag; the JSONL keeps the last with its count.
    """
    for attempt in range(1, pacing.attempts + 1):
        session.send_frame(index, msg)
        time.sleep(pacing.settle_s)
        session.send_instruction(request, index)
        deadline = time.monotonic() + pacing.result_timeout_s
        while session.pending and time.monotonic() < deadline:
            session.drain(min(0.1, deadline - time.monotonic()))
        if session.pending:
            session.give_up_pending()
            return
        answer = session.answers.pop()
        answer.fields["attempts"] = attempt
        if answer.fields["status"] not in RETRIED or attempt == pacing.attempts:
            session.wait_for_targets(answer)
            session.finish(answer)
            return


def run_lock_step(session: Session, bag: bag_io.InputBag, plan: Plan, pacing: Pacing, decompress: bool,
                  progress: tqdm) -> None:
    by_frame = collections.defaultdict(list)
    for request in plan.requests:
        by_frame[request.frame_index].append(request)
    for index, _, msg in frames_to_publish(bag, plan, decompress):
        if index not in by_frame:
            session.send_frame(index, msg)
        for request in by_frame.get(index, []):
            ask_lock_step(session, index, msg, request, pacing)
            progress.update(1)


def run_timed(session: Session, bag: bag_io.InputBag, plan: Plan, pacing: Pacing, decompress: bool,
              progress: tqdm) -> None:
    """Frames and instructions at their recorded times / rate; answers are collected as they come."""
    start_bag, start_wall = plan.frame_times_ns[0], time.monotonic()
    requests = collections.deque(plan.requests)
    newest_index = None

    def wait_until(bag_time_ns: int) -> None:
        while (delay := start_wall + (bag_time_ns - start_bag) / 1e9 / pacing.rate - time.monotonic()) > 0:
            progress.update(session.drain(min(delay, 0.05)))

    frame_sent_at: dict[int, float] = {}

    def send_due(before_ns: int | None) -> None:
        while requests and (before_ns is None or requests[0].time_ns < before_ns):
            request = requests.popleft()
            wait_until(request.time_ns)
            # Frames (best effort) and instructions travel on separate topics: an instruction sent at the
            # instant of its frame can overtake it, so it leaves at least --settle after the frame.
            while (delay := frame_sent_at.get(request.frame_index, 0.0) + pacing.settle_s - time.monotonic()) > 0:
                progress.update(session.drain(min(delay, 0.05)))
            session.send_instruction(request, newest_index)

    for index, timestamp, msg in frames_to_publish(bag, plan, decompress):
        send_due(timestamp)
        wait_until(timestamp)
        session.send_frame(index, msg)
        frame_sent_at[index] = time.monotonic()
        newest_index = index
    send_due(None)
    deadline = time.monotonic() + pacing.result_timeout_s
    while (session.pending or session.parked) and time.monotonic() < deadline:
        progress.update(session.drain(0.1))
    session.finish_parked()
    session.give_up_pending()


def summarize_replay(records: list[dict], interrupted: bool) -> dict:
    statuses = collections.Counter(r["status"] for r in records)
    latencies = [r["total_ms"] for r in records if "total_ms" in r]
    round_trips = [r["round_trip_ms"] for r in records if "round_trip_ms" in r]
    measured = [r["targets_3d"] for r in records if "targets_3d" in r]  # answers with masks, depth on
    return {
        "requests": len(records),
        "targets_3d": None if not measured else {
            "answers_with_masks": len(measured),
            "received": sum(t is not None for t in measured),
            "with_point": sum(t is not None and t["best_index"] >= 0 for t in measured),
        },
        "failures": sum(n for status, n in statuses.items() if not Status.is_answered(status)),
        "statuses": dict(statuses),
        "latency_ms": median_p95(latencies),
        "round_trip_ms": median_p95(round_trips),
        "model_ids": sorted({r["model_id"] for r in records if r.get("model_id")}),
        "interrupted": interrupted,
    }


def print_summary(summary: dict, results_root: Path, bag_path: Path) -> None:
    lat, rtt = summary["latency_ms"], summary["round_trip_ms"]
    print(f"\nreplay {'INTERRUPTED' if summary['interrupted'] else 'done'}: {summary['requests']} requests, "
          f"{summary['failures']} failed")
    print("  statuses:   " + (", ".join(f"{k} {v}" for k, v in sorted(summary["statuses"].items())) or "none"))
    print(f"  latency:    median {lat['median']} ms, p95 {lat['p95']} ms "
          "(node: instruction received -> result published)")
    print(f"  round trip: median {rtt['median']} ms, p95 {rtt['p95']} ms (replay: instruction sent -> result received)")
    print(f"  model:      {', '.join(summary['model_ids']) or 'unknown'}")
    if summary["targets_3d"] is not None:
        counts = summary["targets_3d"]
        print(f"  3D targets: {counts['with_point']} of {counts['answers_with_masks']} answers with masks have a point "
              f"(~/targets_3d received for {counts['received']}; results.jsonl's targets_3d)")
    print(f"  results:    {results_root}/results.jsonl (masks/, overlays/)")
    print(f"  output bag: {bag_path}")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if semantic_replay.wanted(args):
        return semantic_replay.run(args)
    results_root = Path(args.output)
    if results_root.exists() and any(results_root.iterdir()):
        print(f"error: {results_root} exists and is not empty; choose another --output", file=sys.stderr)
        return EXIT_BAD_INPUT
    if (args.rate is not None and args.rate <= 0) or args.attempts < 1 or args.delay < 0 or args.settle < 0:
        print("error: --rate must be > 0, --attempts at least 1, --delay and --settle >= 0", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        with bag_io.InputBag(args.bag) as bag:
            plan = make_plan(bag, args)
            return replay(bag, plan, args, results_root, depth_replay.resolve(bag, args, plan.image_topic))
    except (BagError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


def replay(bag: bag_io.InputBag, plan: Plan, args: argparse.Namespace, results_root: Path,
           depth_topics: dict[str, str] | None = None) -> int:
    """Run the replay; whatever happens (Ctrl-C and SIGTERM included) the output bag is closed and readable."""
    from lisa_ros.tools import ros_link  # rclpy only once the input is known to be good

    image_in = args.publish_image or node_image_topic(plan.image_topic, plan.image_type)
    compressed = plan.image_type == bag_io.COMPRESSED_IMAGE and not args.decompress
    image_out, image_out_type = ((f"{image_in}/compressed", bag_io.COMPRESSED_IMAGE) if compressed
                                 else (image_in, bag_io.IMAGE))
    instruction_out = args.publish_instruction or args.instruction_topic or "/instruction"
    pacing = Pacing(rate=args.rate, settle_s=args.settle, result_timeout_s=args.result_timeout, attempts=args.attempts)
    previous_handlers = signal.getsignal(signal.SIGINT), signal.signal(signal.SIGTERM, _raise_interrupt)
    process = link = output = results = session = None
    interrupted, code = False, 0
    try:
        if args.start_node:
            params = args.node_param + (["compressed:=true"] if compressed else [])
            process = ros_link.start_node(args.node_name, image_in, instruction_out, args.node_params, params,
                                          depth_topics)
        link = ros_link.RosLink((image_out, image_out_type), instruction_out, args.node_name)
        link.wait_for_node(args.wait_for_node, process)
        time.sleep(args.delay)
        results = ResultsFolder(results_root)
        output = bag_io.OutputBag(results_root / "bag", args.output_storage)
        session = Session(link, output, results, lock_step=pacing.lock_step, node_process=process)
        if depth_topics:
            session.depth_feed = depth_replay.DepthFeed(bag, depth_topics, link.node, output)
            if session.depth_feed.wait_for_subscribers() and "depth" in depth_topics:  # the node measures it
                link.record_outputs(("targets_3d",), depth_replay.SUBSCRIBER_WAIT_S)
                targets_topic = f"/{link.node_name}/targets_3d"
                session.targets_topic = targets_topic if targets_topic in link.recorded else None
        print(f"replaying {len(plan.frame_times_ns)} frames of {plan.image_topic}, {len(plan.requests)} instructions, "
              f"{pacing.describe()}, into {args.node_name} ({image_out}, {instruction_out})", file=sys.stderr)
        with tqdm(total=len(plan.requests), unit="req", disable=args.no_progress, file=sys.stderr) as progress:
            send_all = run_lock_step if pacing.lock_step else run_timed
            send_all(session, bag, plan, pacing, args.decompress, progress)
        session.drain(0.3)  # masks/overlays published just after the last result
    except KeyboardInterrupt:
        interrupted, code = True, EXIT_INTERRUPTED
    except (ros_link.NodeUnavailable, NodeExited) as err:
        print(f"error: {err}", file=sys.stderr)
        code = EXIT_NO_NODE
    finally:
        # A second Ctrl-C or TERM must not cut the clean-up short; the bag is closed first.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if output is not None:
                output.close()
            if session is not None:
                session.finish_parked()  # answered, their 3D targets not in yet
                session.give_up_pending()  # asked but not answered, e.g. at Ctrl-C
            if results is not None:
                summary = summarize_replay(session.records if session else [], interrupted)
                results.write_summary(summary)
                results.close()
                print_summary(summary, results_root, results_root / "bag")
                if code == 0 and args.fail_on_error and summary["failures"]:
                    code = EXIT_FAILURES
            if link is not None:
                link.close()
            if process is not None:
                process.stop()
        finally:
            signal.signal(signal.SIGINT, previous_handlers[0])
            signal.signal(signal.SIGTERM, previous_handlers[1])
    return code
