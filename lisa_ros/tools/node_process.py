"""``lisa_node`` started as its own process, as ``ros2 run`` would: for the replay, the tests and the benchmarks.

Needs the colcon install (``scripts/ros_env.sh``) to find the executable; no rclpy in
this process. The node is stopped with SIGINT, as a terminal's Ctrl-C would, so its
own shutdown path (answers for waiting instructions, engine unload) runs. ``rss_mb`` and
``thread_count`` measure it (or any process) for the leak checks of the tests and benchmarks.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


def lisa_node_executable() -> Path:
    """The installed ``lisa_node`` script (colcon's lib/lisa_ros)."""
    from ament_index_python.packages import get_package_prefix

    return Path(get_package_prefix("lisa_ros")) / "lib" / "lisa_ros" / "lisa_node"


def write_params_file(path: Path, params: Mapping[str, Any]) -> Path:
    """A ROS 2 parameters file for any node name ("/**"); dotted names ("model.path") become nested keys.

    A file keeps the values' YAML types (2.0 stays a double), which ``-p name:=value`` would guess.
    """
    nested: dict = {}
    for key, value in params.items():
        *groups, leaf = key.split(".")
        level = nested
        for group in groups:
            level = level.setdefault(group, {})
        level[leaf] = value
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": nested}}))
    return path


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (VmRSS, MiB); None once it has exited (Linux ``/proc``)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def thread_count(pid: int) -> int | None:
    """Threads of a process; None once it has exited (Linux ``/proc``)."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


class NodeProcess:
    """A running ``lisa_node`` process.

    namespace / node_name: remap the node (``__ns``, ``__node``: the latter only when it is not the default,
        as it renames every node of the process); ``topic()`` resolves names against them.
    params_files: parameter files, in order; ``params`` (dotted names) is written to one more, read last.
    remaps: topic remappings (``image`` -> ``/camera/image_raw``); ros_args: any further ``--ros-args`` words.
    workdir: where the generated parameter file and the log go (default: a new temporary folder, if needed).
    capture_log: the node's output goes to ``workdir/lisa_node.log`` (else it shares this process's terminal).
    own_session: a process group of its own, so a terminal's Ctrl-C reaches only this process, which
        then stops the node itself.
    executable: another script to run in its place (e.g. an instrumented node, for profiling).
    """

    def __init__(self, *, namespace: str = "", node_name: str = "lisa_node",
                 params_files: Sequence[str | os.PathLike] = (), params: Mapping[str, Any] | None = None,
                 remaps: Mapping[str, str] | None = None, ros_args: Sequence[str] = (),
                 workdir: Path | None = None, capture_log: bool = True, own_session: bool = False,
                 executable: str | os.PathLike | None = None) -> None:
        self.namespace, self.node_name = namespace.rstrip("/"), node_name
        if workdir is None and (params or capture_log):
            workdir = Path(tempfile.mkdtemp(prefix="lisa_node_"))
        self.workdir = Path(workdir) if workdir is not None else None
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(executable or lisa_node_executable()), "--ros-args"]
        if namespace:
            command += ["-r", f"__ns:={namespace}"]
        if node_name != "lisa_node":
            command += ["-r", f"__node:={node_name}"]
        files = [Path(f).resolve() for f in params_files]
        if params:
            files.append(write_params_file(self.workdir / "params.yaml", params))
        for params_file in files:
            command += ["--params-file", str(params_file)]
        for source, target in (remaps or {}).items():
            command += ["-r", f"{source}:={target}"]
        command += list(ros_args)
        self.command = command
        self.log_path = self.workdir / "lisa_node.log" if capture_log else None
        self._log_file = open(self.log_path, "wb") if self.log_path else None  # closed by stop()
        self.popen = subprocess.Popen(
            command, stdout=self._log_file, stderr=subprocess.STDOUT if self._log_file else None,
            env=dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0") if self._log_file else None,
            start_new_session=own_session)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        """The exit code, or None while it runs."""
        return self.popen.poll()

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def topic(self, name: str) -> str:
        """Absolute name of a node-relative (``image``) or private (``~/result``) topic or service."""
        if name.startswith("~/"):
            return f"{self.namespace}/{self.node_name}/{name[2:]}"
        return name if name.startswith("/") else f"{self.namespace}/{name}"

    @property
    def log(self) -> str:
        """What the node has written so far ("" when its output is not captured)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> float:
        """Send ``sig`` and wait for the exit (killed after ``timeout``); returns how long exiting took."""
        took = 0.0
        if self.popen.poll() is None:
            started = time.monotonic()
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
            took = time.monotonic() - started
        if self._log_file is not None:
            self._log_file.close()
        return took
