"""Security: malicious checkpoints are refused, no remote code, nothing from a request reaches a shell or a path.

Malicious pickles are crafted here: a ``.bin`` shard whose unpickling runs
``os.system("touch <marker>")``, inside an otherwise valid tiny checkpoint. The
test first proves the file is a real exploit (plain ``torch.load`` does create the
marker), then asserts the project's loader refuses it with a clear error and the
marker does not exist.
"""
from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from rel_support import wait_for

CATEGORY = "Security"
REPO = Path(__file__).resolve().parents[2]
torch = pytest.importorskip("torch")


class _Exploit:
    """Unpickling this runs a shell command (what a malicious checkpoint would do)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _copy_checkpoint(tiny, tmp_path: Path) -> tuple[Path, Path]:
    lisa = tmp_path / "lisa"
    clip = tmp_path / "clip"
    shutil.copytree(tiny.lisa_dir, lisa)
    shutil.copytree(tiny.clip_dir, clip)
    return lisa, clip


def _poison_shard(path: Path, marker: Path, legacy: bool = False) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else {}
    state["model.exploit"] = _Exploit(f"touch {marker}")
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)


def _prove_exploit(path: Path, marker: Path) -> None:
    """The crafted file really runs code when loaded without weights_only (then clean up)."""
    try:
        torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        pass
    assert marker.exists(), "the crafted pickle is not an exploit; the test would prove nothing"
    marker.unlink()


def _load_engine(lisa: Path, clip: Path):
    from lisa_ros.model.engine import LisaEngine

    engine = LisaEngine.from_options({"path": str(lisa), "vision_tower": str(clip), "device": "cpu",
                                      "precision": "fp32", "local_files_only": True})
    engine.load()
    return engine


@pytest.mark.parametrize("variant", ["zip-shard", "legacy-shard", "raw-pickle-shard", "clip-bin"])
def test_malicious_pickle_in_a_checkpoint_is_refused_and_never_runs(case, tiny_lisa, tmp_path, variant):
    from lisa_ros.core.engine import EngineError

    lisa, clip = _copy_checkpoint(tiny_lisa, tmp_path)
    marker = tmp_path / f"PWNED-{variant}"
    if variant == "zip-shard":
        target = lisa / "pytorch_model-00002-of-00002.bin"
        _poison_shard(target, marker)
    elif variant == "legacy-shard":
        target = lisa / "pytorch_model-00002-of-00002.bin"
        _poison_shard(target, marker, legacy=True)
    elif variant == "raw-pickle-shard":
        target = lisa / "pytorch_model-00001-of-00002.bin"
        target.write_bytes(pickle.dumps({"model.norm.weight": _Exploit(f"touch {marker}")}))
    else:  # the CLIP tower as a pickle (the other file the engine reads)
        for item in clip.glob("model*.safetensors*"):
            item.unlink()
        target = clip / "pytorch_model.bin"
        state = {"vision_model.exploit": _Exploit(f"touch {marker}")}
        torch.save(state, target)
    _prove_exploit(target, marker)

    with pytest.raises(EngineError) as error:
        _load_engine(lisa, clip)
    message = str(error.value)
    clear = target.name in message and ("refusing" in message or "weights_only" in message
                                         or "corrupted" in message)
    case.check(clear and not marker.exists(), f"{variant}: {message[:160]}", error=True)
    assert not marker.exists(), "the malicious pickle ran code"
    assert clear, message


def test_weight_map_cannot_point_outside_the_checkpoint(case, tiny_lisa, tmp_path):
    from lisa_ros.core.engine import EngineError

    lisa, clip = _copy_checkpoint(tiny_lisa, tmp_path)
    outside = tmp_path / "outside.bin"
    marker = tmp_path / "PWNED-outside"
    torch.save({"model.exploit": _Exploit(f"touch {marker}")}, outside)
    index_path = lisa / "pytorch_model.bin.index.json"
    original = json.loads(index_path.read_text())
    for escape in ("../outside.bin", str(outside), "sub/../../outside.bin"):
        index = json.loads(json.dumps(original))
        first = next(iter(index["weight_map"]))
        index["weight_map"][first] = escape
        index_path.write_text(json.dumps(index))
        with pytest.raises((ValueError, EngineError)) as error:  # the option checks read the index too
            _load_engine(lisa, clip)
        case.check("outside the checkpoint" in str(error.value) and not marker.exists(),
                   f"{escape}: {error.value}", error=True)
    assert not marker.exists() and not case.failures, case.failures


def test_no_trust_remote_code_anywhere(case):
    offenders = []
    for path in REPO.rglob("*"):
        if (not path.is_file() or path.suffix not in (".py", ".yaml", ".yml", ".sh", ".txt", ".toml", ".cfg", ".xml")
                or any(part.startswith(".") for part in path.relative_to(REPO).parts)
                or path.resolve() == Path(__file__).resolve()):
            continue
        text = path.read_text(errors="replace")
        for match in re.finditer(r"trust_remote_code\s*[=:]\s*(\w+)", text):
            if match.group(1) not in ("False", "false"):
                offenders.append(f"{path.relative_to(REPO)}: {match.group(0)}")
        case.answered_ok(str(path))
    assert not offenders, offenders


_SHELL_CALLS = {"os.system", "os.popen", "os.execv", "os.execvp", "os.execve", "os.spawnv", "os.posix_spawn",
                "subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call",
                "subprocess.check_output", "eval", "exec", "pty.spawn", "pickle.load", "pickle.loads",
                "torch.load"}


def _calls(tree) -> list[tuple[str, ast.Call]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else (
                f"{func.value.id}.{func.attr}" if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                else "")
            found.append((name, node))
    return found


def test_the_node_code_has_no_shell_eval_or_unsafe_load(case):
    """Static: what runs in the node process (core, node, model) never spawns, evals, or unpickles freely."""
    offenders = []
    for path in sorted((REPO / "lisa_ros").glob("*/*.py")):
        if path.parent.name not in ("core", "node", "model"):
            continue
        tree = ast.parse(path.read_text())
        for name, call in _calls(tree):
            if name in _SHELL_CALLS:
                keywords = {k.arg: k.value for k in call.keywords}
                safe_load = name == "torch.load" and isinstance(keywords.get("weights_only"), ast.Constant) \
                    and keywords["weights_only"].value is True
                if not safe_load:
                    offenders.append(f"{path.relative_to(REPO)}:{call.lineno}: {name}")
        case.answered_ok(str(path))
    assert not offenders, offenders


def test_tools_spawn_without_a_shell(case):
    """The tools do start processes (the node for replay): argv lists, never shell=True."""
    offenders = []
    for path in sorted((REPO / "lisa_ros").rglob("*.py")):
        for name, call in _calls(ast.parse(path.read_text())):
            for keyword in call.keywords:
                if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant) and not keyword.value.value):
                    offenders.append(f"{path.relative_to(REPO)}:{call.lineno}: {name}(shell=...)")
            if name in ("os.system", "os.popen"):
                offenders.append(f"{path.relative_to(REPO)}:{call.lineno}: {name}")
        case.answered_ok(str(path))
    assert not offenders, offenders


@pytest.mark.parametrize("options,fragment", [
    ({"path": ""}, "'path' must name"),
    ({"path": "   "}, "'path' must name"),
    ({"device": "cuda; rm -rf /"}, "'device' must be"),
    ({"device": "cpu\n"}, "'device' must be"),
    ({"precision": "fp32 && id"}, "'precision' must be"),
    ({"path": 5}, "must be str"),
    ({"trust_remote_code": True}, "unknown LISA engine option"),
    ({"max_new_tokens": 10**9}, "'max_new_tokens' must be in"),
])
def test_engine_parameters_are_validated(case, options, fragment):
    from lisa_ros.model.engine import LisaOptions

    with pytest.raises(ValueError, match=re.escape(fragment)):
        LisaOptions.from_mapping({"device": "cpu", "precision": "fp32", **options})
    case.answered_ok(repr(options), error=True)


@pytest.mark.parametrize("path,fragment", [
    ("/nonexistent/lisa-checkpoint", "does not exist"),
    ("./no/such/dir", "does not exist"),
    ("~/no-such-lisa-dir", "does not exist"),
    ("/etc/passwd", "is a file, not a checkpoint directory"),
    ("../../../../etc", "holds no weights|config.json"),
    ("not a repo id; rm -rf /", "not a readable|not in the Hugging Face cache|does not exist"),
])
def test_model_path_parameter_is_checked_and_named_in_the_error(case, tmp_path, path, fragment, monkeypatch):
    from lisa_ros.core.engine import EngineError
    from lisa_ros.model.engine import LisaEngine

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises((ValueError, EngineError)) as error:  # a local path at configure, a hub id at load
        LisaEngine.from_options({"path": path, "device": "cpu", "precision": "fp32", "local_files_only": True}).load()
    ok = re.search(fragment, str(error.value)) is not None and "Fix" in str(error.value)
    case.check(ok, f"{path}: {error.value}", error=True)
    assert ok, str(error.value)


# -- dynamic: what a request can reach (audit hooks, in-process node) -------------------------

_AUDIT: dict = {"active": False, "events": []}
_SPAWN_EVENTS = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen", "pty.spawn",
                 "os.fork", "os.forkpty")


def _audit(event: str, args) -> None:
    if not _AUDIT["active"]:
        return
    if event.startswith(_SPAWN_EVENTS):
        _AUDIT["events"].append((event, repr(args)[:200]))
    elif event in ("open", "os.remove", "os.rename", "os.mkdir", "os.symlink", "os.chmod", "shutil.rmtree",
                   "os.listdir", "os.scandir") and "PWN" in repr(args):
        _AUDIT["events"].append((event, repr(args)[:200]))


_HOOKED = False

HOSTILE = [
    "$(touch /tmp/PWN1)", "`touch PWN2`", "; touch PWN3 #", "| tee PWN4", "../../../../tmp/PWN5",
    "/tmp/PWN6\x00.png", "%s%s%s%n PWN7", "{0.__class__} PWN8", "PWN9\n[ERROR] [lisa_node]: forged log line",
    "__import__('os').system('touch PWN10')", "file:///etc/passwd PWN11", "\u202eexe.PWN12",
]


def _serve(coroutine):
    """Runs a coroutine service callback to its end, as the executor would (it awaits the worker's answer)."""
    while True:
        try:
            coroutine.send(None)
        except StopIteration as done:
            return done.value
        time.sleep(0.005)


@pytest.mark.ros
def test_hostile_request_fields_never_reach_a_shell_or_a_file(case, ros_context, tmp_path, monkeypatch):
    """In-process node (plumbing engine): instructions, conversation ids and frame ids full of shell and
    path syntax go through validation, the worker, the engine and publishing while an audit hook
    watches every process spawn, and every file operation naming them."""
    global _HOOKED
    import numpy as np
    from rclpy.lifecycle import TransitionCallbackReturn

    from lisa_ros.node.lisa_node import LisaNode
    from lisa_ros.srv import Segment
    from rel_support import image_msg

    monkeypatch.chdir(tmp_path)
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    engine: plumbing\n    publish_overlay: true\n")
    node = LisaNode("lisa_audit_probe", context=ros_context, cli_args=["--ros-args", "--params-file", str(params)])
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED = True
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        _AUDIT.update(active=True, events=[])
        with open(tmp_path / "PWN-control", "w"):  # control: the hook does see file operations
            pass
        assert _AUDIT["events"] and _AUDIT["events"][0][0] == "open", _AUDIT["events"]
        (tmp_path / "PWN-control").unlink()
        _AUDIT["events"].clear()
        pixels = np.full((8, 8, 3), 7, np.uint8)
        for index, text in enumerate(HOSTILE):
            request = Segment.Request(instruction=text, conversation_id=text,
                                      image=image_msg(pixels, "rgb8", stamp=(index + 1, 0), frame_id=text[:60]))
            response = _serve(node._on_segment(request, Segment.Response()))
            result = response.result
            # Answered (OK) or refused with a clear status; the text is data, echoed back verbatim.
            ok = result.status in (0, 1, 3) and result.request_id != ""
            if result.status in (0, 1):
                ok = ok and result.instruction == text.strip() and result.header.frame_id == text[:60]
            case.check(ok, f"{text!r}: status {result.status} {result.status_message[:60]}")
        # The topic path too (the callback the subscription would run).
        from std_msgs.msg import String
        for text in HOSTILE:
            node._on_instruction(String(data=text))
        wait_for(lambda: node._worker.queue_depth == 0, 10, "the topic requests to finish")
        statuses = sorted({int(s) for s in node._stats.status_counts})
        case.note(f"{2 * len(HOSTILE)} hostile requests, statuses seen {statuses}; "
                  f"audit events: {len(_AUDIT['events'])}")
        _AUDIT["active"] = False
    finally:
        _AUDIT["active"] = False
        node.release("test over")
        node.destroy_node()
    created = [p.name for p in tmp_path.rglob("*PWN*")] + [p for p in os.listdir("/tmp") if p.startswith("PWN")]
    case.check(not _AUDIT["events"] and not created, f"audit events {_AUDIT['events'][:5]}, files {created}")
    assert not _AUDIT["events"], _AUDIT["events"]
    assert not created, created
    assert not case.failures, case.failures


def test_threads_started_by_an_audited_node_are_gone(case):
    """Sanity for the test above: it left no worker threads behind (release() joins them)."""
    names = [t.name for t in threading.enumerate() if t.name.startswith("lisa-")]
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "lisa-worker"], 3, f"threads {names}")
    case.answered_ok("threads")
