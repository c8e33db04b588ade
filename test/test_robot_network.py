"""The README's robot commands, run as written on a "robot" that sees its camera over a real network.

Two network namespaces made here stand for two hosts, joined by a veth pair with addresses of this test's
own (nothing leaves them): a camera host publishes images (rclpy, sensor-data QoS, the default domain 0, the
RMW's default discovery) and asks; the robot host runs the README's robot command block literally. A Fast DDS
profile without shared memory (the user's own FASTRTPS_DEFAULT_PROFILES_FILE, which robot use keeps) makes the
images really cross the veth, which its byte counter shows. The same block with ``--isolated`` sees no camera,
neither the other host's nor one on its own host's domain 0.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CAMERA_TOPIC = "/camera/camera/color/image_raw"  # realsense-ros 4.5x, as the README's block names it
CAMERA_SIZE = (160, 120)  # the other host's frames
LOCAL_CAMERA_SIZE = (96, 72)  # a camera on the robot host itself, for the isolated run
STATUS_OK, STATUS_NO_IMAGE = 0, 4  # lisa_ros/msg/SegmentationResult

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="network namespaces need root and iproute2's `ip`")

NO_SHM_PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles">
  <profiles>
    <transport_descriptors>
      <transport_descriptor><transport_id>udp_only</transport_id><type>UDPv4</type></transport_descriptor>
    </transport_descriptors>
    <participant profile_name="udp_only" is_default_profile="true">
      <rtps>
        <useBuiltinTransports>false</useBuiltinTransports>
        <userTransports><transport_id>udp_only</transport_id></userTransports>
      </rtps>
    </participant>
  </profiles>
</dds>
"""

CAMERA = """
import sys, time
import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

width, height = int(sys.argv[1]), int(sys.argv[2])
rclpy.init()
node = rclpy.create_node("camera")
publisher = node.create_publisher(Image, sys.argv[3], qos_profile_sensor_data)
frame = Image(width=width, height=height, encoding="rgb8", step=width * 3,
              data=(np.arange(width * height * 3) % 251).astype(np.uint8).tobytes())
frame.header.frame_id = "camera_color_optical_frame"
while True:
    frame.header.stamp = node.get_clock().now().to_msg()
    publisher.publish(frame)
    time.sleep(0.1)
"""

ASK = """
import json, sys, time
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from lisa_ros.msg import SegmentationResult

until_status, after_first_answer = int(sys.argv[1]), float(sys.argv[2])
rclpy.init()
node = rclpy.create_node("ask_lisa")
answers = []
node.create_subscription(SegmentationResult, "/lisa_node/result", answers.append, 10)
reliable = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
instructions = node.create_publisher(String, "/instruction", reliable)
end = time.monotonic() + 120  # the node's start included
while time.monotonic() < end and not any(a.status == until_status for a in answers):
    if answers and end - time.monotonic() > after_first_answer:
        end = time.monotonic() + after_first_answer
    if instructions.get_subscription_count() and node.count_publishers("/lisa_node/result"):
        instructions.publish(String(data="segment the mug"))
    stop_spinning = time.monotonic() + 1.0
    while time.monotonic() < stop_spinning:
        rclpy.spin_once(node, timeout_sec=0.1)
print(json.dumps([{"status": a.status, "message": a.status_message, "mask_sizes": [[m.width, m.height]
                  for m in a.masks]} for a in answers]))
"""


def robot_commands() -> str:
    """The README's robot command block, as written (marked so that this test finds it)."""
    readme = (REPO / "README.md").read_text()
    return re.search(r"<!-- robot-commands:[^>]*-->\n```bash\n(.*?)```", readme, re.S).group(1)


class Hosts:
    """Two network namespaces joined by a veth pair (10.231.x.1/30 - .2/30); every name carries this pid."""

    def __init__(self) -> None:
        tag = os.getpid() % 100000
        self.camera, self.robot = f"lisa_cam_{tag}", f"lisa_robot_{tag}"
        self.camera_link, self.robot_link = f"lcam{tag}", f"lbot{tag}"
        self.subnet = f"10.231.{tag % 250}"

    def create(self) -> None:
        subnet = self.subnet
        for namespace in (self.camera, self.robot):
            run("ip", "netns", "add", namespace)
            self.exec(namespace, "ip", "link", "set", "lo", "up")
        run("ip", "link", "add", self.camera_link, "netns", self.camera, "type", "veth",
            "peer", "name", self.robot_link, "netns", self.robot)
        for namespace, link, address in ((self.camera, self.camera_link, f"{subnet}.1/30"),
                                         (self.robot, self.robot_link, f"{subnet}.2/30")):
            self.exec(namespace, "ip", "addr", "add", address, "dev", link)
            self.exec(namespace, "ip", "link", "set", link, "up")
            # DDS discovery is multicast (239.255.0.1): its route, as a LAN's default route would give it.
            self.exec(namespace, "ip", "route", "add", "224.0.0.0/4", "dev", link)

    def exec(self, namespace: str, *command: str) -> str:
        return run("ip", "netns", "exec", namespace, *command)

    def received_bytes(self) -> int:
        return int(self.exec(self.robot, "cat", f"/sys/class/net/{self.robot_link}/statistics/rx_bytes"))

    def remove(self) -> None:
        for namespace in (self.camera, self.robot):  # deleting a namespace deletes its veth end and the pair
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"
    return done.stdout


def shell_env(**extra: str) -> dict[str, str]:
    """A login-like environment: nothing of this test run's own (loopback) set-up."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **extra}


class Started:
    """Processes started in namespaces (each in a session of its own), all stopped with SIGINT at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.processes = folder, []

    def start(self, name: str, namespace: str, script: str, env: dict[str, str]) -> Path:
        log = self.folder / f"{name}.log"
        with log.open("w") as output:
            self.processes.append(subprocess.Popen(["ip", "netns", "exec", namespace, "bash", "-c", script],
                                                   cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
                                                   start_new_session=True))
        return log

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def ask(namespace: str, until_status: int, after_first_answer: float, env: dict[str, str], script: Path) -> list[dict]:
    """Send "segment the mug" on /instruction every second until an answer on /lisa_node/result has
    ``until_status`` or ``after_first_answer`` s have passed since the first answer (120 s at most); the answers."""
    done = subprocess.run(["ip", "netns", "exec", namespace, "bash", "-c",
                           f"source scripts/ros_env.sh && python -P {script} {until_status} {after_first_answer}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_readme_robot_commands_see_a_camera_on_another_host_and_isolated_ones_see_none(tmp_path):
    commands = robot_commands()
    assert commands.startswith("source scripts/ros_env.sh\n") and "lisa_node " in commands, commands
    profile = tmp_path / "udp_only.xml"
    profile.write_text(NO_SHM_PROFILE)
    camera, asker = tmp_path / "camera.py", tmp_path / "ask.py"
    camera.write_text(CAMERA)
    asker.write_text(ASK)
    robot_env = shell_env(FASTRTPS_DEFAULT_PROFILES_FILE=str(profile))  # the user's own DDS profile: no SHM
    camera_command = f"source scripts/ros_env.sh && exec python -P {camera}"
    hosts, started = Hosts(), Started(tmp_path)
    try:
        hosts.create()
        started.start("camera", hosts.camera, f"{camera_command} {CAMERA_SIZE[0]} {CAMERA_SIZE[1]} {CAMERA_TOPIC}",
                      robot_env)
        node_log = started.start("robot_node", hosts.robot, commands, robot_env)
        before = hosts.received_bytes()
        answers = ask(hosts.camera, STATUS_OK, 120, robot_env, asker)
        crossed = hosts.received_bytes() - before
        assert any(a["status"] == STATUS_OK for a in answers), f"{answers}\n{node_log.read_text()}"
        answered = next(a for a in answers if a["status"] == STATUS_OK)
        assert answered["mask_sizes"] and all(size == list(CAMERA_SIZE) for size in answered["mask_sizes"])
        assert crossed > CAMERA_SIZE[0] * CAMERA_SIZE[1] * 3, crossed  # at least a frame came over the veth
        said = node_log.read_text()
        assert "lisa_ros network: the shell's own: ROS_DOMAIN_ID=0 (default)" in said and str(profile) in said
        started.stop()

        # The same command with --isolated: a camera on this host's domain 0 too, and neither is seen.
        isolated = commands.replace("source scripts/ros_env.sh\n", "source scripts/ros_env.sh --isolated\n", 1)
        started.start("camera", hosts.camera, f"{camera_command} {CAMERA_SIZE[0]} {CAMERA_SIZE[1]} {CAMERA_TOPIC}",
                      robot_env)
        started.start("local_camera", hosts.robot,
                      f"{camera_command} {LOCAL_CAMERA_SIZE[0]} {LOCAL_CAMERA_SIZE[1]} {CAMERA_TOPIC}", shell_env())
        node_log = started.start("isolated_node", hosts.robot, isolated, robot_env)
        deadline = time.monotonic() + 60
        while not (domain := re.search(r"ROS_DOMAIN_ID=(\d+) of this run alone", node_log.read_text())):
            assert time.monotonic() < deadline, node_log.read_text()
            time.sleep(0.1)
        loopback = shell_env(FASTRTPS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds_localhost.xml"),
                             ROS_DOMAIN_ID=domain.group(1))
        answers = ask(hosts.robot, STATUS_OK, 10, loopback, asker)  # asks for 10 s after the first answer: never OK
        assert len(answers) >= 5 and all(a["status"] == STATUS_NO_IMAGE for a in answers), \
            f"{answers}\n{node_log.read_text()}"
    finally:
        started.stop()
        hosts.remove()
    assert not {hosts.camera, hosts.robot} & set(run("ip", "netns", "list").split())
