"""The replay carries a bag's depth image and camera info to a real lisa_node (plumbing, depth.enabled) over DDS."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bagfactory import write_bag
from lisa_ros.tools import bag_io, visual
from lisa_ros.tools.cli import main

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[2]
PLUMBING = REPO / "config" / "plumbing_test.yaml"


@pytest.mark.parametrize("pacing", [[], ["--rate", "1"]], ids=["lock-step", "timed"])
def test_replay_sends_depth_and_camera_info_and_the_node_measures_targets(tmp_path, pacing):
    stamps = write_bag(tmp_path / "bag", frames=3, instructions={0: "segment the cup", 2: "the cup"}, depth_mm=1500)
    out, name = tmp_path / "out", "depth_replay"
    command = [sys.executable, "-P", "-m", "lisa_ros.tools.cli", "replay", str(tmp_path / "bag"), "-o", str(out),
               "--no-progress", "--start-node", "--node-params", str(PLUMBING), "--node-param", "depth.enabled:=true",
               "--node-name", name, "--publish-image", f"/{name}_in/image", "--publish-instruction",
               f"/{name}_in/instruction", "--image-topic", "/camera/image", "--result-timeout", "30",
               "--fail-on-error", *pacing]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nobody subscribes" not in done.stderr
    with bag_io.InputBag(out / "bag") as bag:
        recorded = {topic: [m for _, m in bag.messages(topic)] for topic in bag.topics}
    depth, infos = recorded["/camera/depth/image_raw"], recorded["/camera/depth/camera_info"]
    assert [bag_io.stamp_ns(m.header) for m in depth] == stamps  # each frame's depth once, re-sends not repeated
    assert [bag_io.stamp_ns(m.header) for m in infos] == stamps
    targets = recorded[f"/{name}/targets_3d"]
    answers = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in answers] == ["OK", "OK"]
    assert len(targets) >= 2
    for message in targets:  # the depth frame paired with the answered colour frame: flat 1.5 m
        depth_stamp = message.depth_stamp.sec * 10**9 + message.depth_stamp.nanosec
        assert depth_stamp == bag_io.stamp_ns(message.header) in stamps
        assert message.targets and all(t.status == 0 for t in message.targets)
        assert all(t.median_depth == pytest.approx(1.5) for t in message.targets)

    # Each answer's line carries its ~/targets_3d (matched by request_id), and eval scores it in 3D.
    by_id = {m.request_id: m for m in targets}
    for record in answers:
        measured = record["targets_3d"]
        message = by_id[record["request_id"]]
        assert measured["depth_stamp_ns"] == int(record["frame_name"]) and measured["best_index"] == 0
        assert measured["targets"][0]["centroid"] == pytest.approx(
            [message.targets[0].centroid.x, message.targets[0].centroid.y, message.targets[0].centroid.z], abs=1e-5)
        assert record["masks"] == [f"masks/{record['request']:04d}_0.png"]
    assert "3D targets: 2 of 2 answers with masks have a point" in done.stdout
    # The plumbing engine's one mask is the whole 160x120 frame: its centroid is the centre pixel's ray
    # (79.5, 59.5) at 1.5 m with bagfactory's camera (f = 160 px, centre (80, 60)). The ground truth says that
    # for the first frame and 10 cm off for the third.
    assert all(visual.read_mask(out / name).all() for record in answers for name in record["masks"])
    centre = (-0.5 / 160 * 1.5, -0.5 / 160 * 1.5, 1.5)
    truth = {stamps[0]: centre, stamps[2]: (centre[0] + 0.1, centre[1], centre[2])}
    gt_bag = tmp_path / "gt"
    with bag_io.OutputBag(gt_bag, "mcap") as bag:
        types = bag_io.typestore().types
        for stamp, (x, y, z) in truth.items():
            header = bag_io.header(stamp, "cam")
            bag.write("/ground_truth/mask", stamp, bag_io.raw_image_msg(np.full((120, 160), 255, np.uint8), header),
                      bag_io.IMAGE)
            bag.write("/ground_truth/position", stamp, types["geometry_msgs/msg/PointStamped"](
                header=header, point=types["geometry_msgs/msg/Point"](x=x, y=y, z=z)), "geometry_msgs/msg/PointStamped")
    assert main(["eval", str(out), "--gt-bag", str(gt_bag)]) == 0
    position = json.loads((out / "report" / "summary.json").read_text())["position"]
    assert (position["samples"], position["measured"], position["within"]) == (2, 2, 1)
    assert position["max_m"] == pytest.approx(0.1, abs=0.001) and position["median_m"] == pytest.approx(0.05, abs=0.001)
    rows = csv.DictReader((out / "report" / "per_sample.csv").open())
    assert min(float(row["position_error_m"]) for row in rows) < 0.001  # the node's centroid is the analytic one


def test_no_depth_topic_in_the_bag_sends_none(tmp_path):
    import argparse

    from lisa_ros.tools import depth_replay

    write_bag(tmp_path / "bag", frames=1)
    args = argparse.Namespace(depth_topic=None, camera_info_topic=None, no_depth=False)
    with bag_io.InputBag(tmp_path / "bag") as bag:
        assert depth_replay.resolve(bag, args, "/camera/image") == {}
    write_bag(tmp_path / "deep", frames=1, depth_mm=800)
    with bag_io.InputBag(tmp_path / "deep") as bag:
        assert depth_replay.resolve(bag, args, "/camera/image") == {
            "depth": "/camera/depth/image_raw", "depth_camera_info": "/camera/depth/camera_info"}
        args.no_depth = True
        assert depth_replay.resolve(bag, args, "/camera/image") == {}
        args.no_depth, args.depth_topic = False, "/camera/image/missing"
        with pytest.raises(bag_io.BagError, match="no topic '/camera/image/missing'"):
            depth_replay.resolve(bag, args, "/camera/image")
