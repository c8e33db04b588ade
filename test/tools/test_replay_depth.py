"""The replay carries a bag's depth image and camera info to a real lisa_node (plumbing, depth.enabled) over DDS."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bagfactory import write_bag
from lisa_ros.tools import bag_io

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[2]
PLUMBING = REPO / "config" / "plumbing_test.yaml"


def test_replay_sends_depth_and_camera_info_and_the_node_measures_targets(tmp_path):
    stamps = write_bag(tmp_path / "bag", frames=3, instructions={0: "segment the cup", 2: "the cup"}, depth_mm=1500)
    out, name = tmp_path / "out", "depth_replay"
    command = [sys.executable, "-P", "-m", "lisa_ros.tools.cli", "replay", str(tmp_path / "bag"), "-o", str(out),
               "--no-progress", "--start-node", "--node-params", str(PLUMBING), "--node-param", "depth.enabled:=true",
               "--node-name", name, "--publish-image", f"/{name}_in/image", "--publish-instruction",
               f"/{name}_in/instruction", "--image-topic", "/camera/image", "--result-timeout", "30",
               "--fail-on-error"]
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
