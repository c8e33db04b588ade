"""The one way lisa_node is started as a process: its command line, parameter file, log and stop."""
import json
import signal
import sys

import yaml

from lisa_ros.tools.node_process import NodeProcess, write_params_file
from polling import wait_for

# Stands in for lisa_node: prints its arguments as JSON, then waits for a signal.
ECHO_ARGS = """import json, signal, sys, time
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
print(json.dumps(sys.argv[1:]), flush=True)
time.sleep(60)
"""


def started(tmp_path, **options) -> tuple[NodeProcess, list[str]]:
    """The stand-in started through NodeProcess, and the arguments it was given."""
    script = tmp_path / "fake_lisa_node.py"
    script.write_text(ECHO_ARGS)
    process = NodeProcess(executable=script, workdir=tmp_path / "node", **options)
    line = wait_for(lambda: process.log.strip() or process.poll() is not None, 30, "the arguments printed")
    assert process.poll() is None, process.log
    return process, json.loads(line.splitlines()[0])


def test_dotted_parameters_become_a_nested_file_for_every_node(tmp_path):
    path = write_params_file(tmp_path / "p.yaml", {"engine": "plumbing", "model.delay_s": 2.0, "model.path": "/x",
                                                   "max_queue": 3})
    assert yaml.safe_load(path.read_text()) == {"/**": {"ros__parameters": {
        "engine": "plumbing", "max_queue": 3, "model": {"delay_s": 2.0, "path": "/x"}}}}


def test_command_line_names_the_namespace_files_remaps_and_ros_args_in_order(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("{}")
    process, argv = started(tmp_path, namespace="/ns", params_files=[base], params={"max_queue": 2},
                            remaps={"image": "/cam"}, ros_args=["--log-level", "warn"])
    try:
        generated = str(tmp_path / "node" / "params.yaml")
        assert argv == ["--ros-args", "-r", "__ns:=/ns", "--params-file", str(base.resolve()),
                        "--params-file", generated, "-r", "image:=/cam", "--log-level", "warn"]
        assert process.topic("~/result") == "/ns/lisa_node/result" and process.topic("image") == "/ns/image"
        assert process.topic("/diagnostics") == "/diagnostics"
    finally:
        took = process.stop(signal.SIGINT)
    assert process.returncode == 0 and took < 10


def test_a_node_name_is_remapped_only_when_it_is_not_the_default(tmp_path):
    process, argv = started(tmp_path, node_name="front_lisa")
    process.stop()
    assert argv == ["--ros-args", "-r", "__node:=front_lisa"] and process.topic("~/mask") == "/front_lisa/mask"
    assert process.stop() == 0.0  # already stopped: nothing to wait for


def test_a_process_ignoring_sigint_is_killed_after_the_timeout(tmp_path):
    script = tmp_path / "stubborn.py"
    script.write_text("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('up', flush=True)\n"
                      "time.sleep(60)\n")
    process = NodeProcess(executable=script, workdir=tmp_path / "node")
    wait_for(lambda: "up" in process.log, 30, "the process to start")
    process.stop(timeout=0.5)
    assert process.returncode == -signal.SIGKILL and sys.executable in process.command[0]
