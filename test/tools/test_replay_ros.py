"""Replay through a real lisa_node (plumbing engine) over DDS, then read the output bag back."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from bagfactory import chunk_compressions, frame, write_bag
from lisa_ros.tools import bag_io, visual

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[2]
PLUMBING = REPO / "config" / "plumbing_test.yaml"


def replay_command(bag, out, name, *extra):
    """`lisa-ros replay` starting its own node on topics of this test only."""
    return [sys.executable, "-P", "-m", "lisa_ros.tools.cli", "replay", str(bag), "--output", str(out), "--no-progress",
            "--start-node", "--node-params", str(PLUMBING), "--node-name", name,
            "--publish-image", f"/{name}_in/image", "--publish-instruction", f"/{name}_in/instruction", *extra]


def run_replay(*args, timeout=120):
    """Runs a replay; a run past ``timeout`` fails the test with what the replay printed so far."""
    try:
        done = subprocess.run(replay_command(*args, "--result-timeout", "30"), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"replay still running after {timeout} s; its output:\n{error.stdout}\n{error.stderr}")
    return done.returncode, done.stdout + done.stderr


def read_output(out):
    with bag_io.InputBag(out / "bag") as bag:
        return {topic: [m for _, m in bag.messages(topic)] for topic in bag.topics}


def storage_of_bag(bag):
    return yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["storage_identifier"]


def records(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_lock_step_gives_one_result_per_instruction_with_source_header(tmp_path):
    instructions = {0: "segment the cup", 1: "the cup and the saucer", 3: "nothing here", 4: "segment the cup"}
    stamps = write_bag(tmp_path / "bag", frames=6, instructions=instructions)
    code, output = run_replay(tmp_path / "bag", tmp_path / "out", "replay_lock", "--fail-on-error")
    assert code == 0, output
    assert "4 requests, 0 failed" in output and "model:      plumbing" in output

    # The output bag by default: MCAP, zstd-compressed chunks.
    assert storage_of_bag(tmp_path / "out" / "bag") == "mcap"
    assert chunk_compressions(tmp_path / "out" / "bag" / "bag.mcap") == {"zstd"}
    recorded = read_output(tmp_path / "out")
    sent, results = recorded["/replay_lock_in/instruction/structured"], recorded["/replay_lock/result"]
    assert len(results) == len(sent) >= len(instructions)  # retries included: one answer per instruction sent
    assert {"/replay_lock/mask", "/replay_lock/explanation", "/replay_lock/overlay"} <= set(recorded)
    # Hidden topics (the ~/segment action's _action/*) are left out, as `ros2 bag record` does, without a warning.
    assert not [topic for topic in recorded if "/_" in topic] and "not recording" not in output, output

    answers = records(tmp_path / "out")
    assert [(r["frame_index"], r["instruction"]) for r in answers] == sorted(instructions.items())
    assert [r["status"] for r in answers] == ["OK", "OK", "NOT_FOUND", "OK"]
    for record in answers:
        assert record["answered_stamp_ns"] == stamps[record["frame_index"]] and record["answered_frame_id"] == "cam"
    final = {r["request"]: r for r in answers}
    # A lock-step retry follows an answer without a frame (the node had not received it yet over DDS): such
    # answers carry a retry status and no source header; every other answer has a source frame's header.
    with_frame = [r for r in results if r.status not in (r.STATUS_NO_IMAGE, r.STATUS_STALE_IMAGE)]
    assert len(with_frame) >= len(instructions)  # an answer on an earlier frame is retried too
    for result in with_frame:
        assert bag_io.stamp_ns(result.header) in stamps and result.header.frame_id == "cam"
    for result in results:  # masks at the source size
        assert all((m.height, m.width, m.encoding) == (120, 160, "mono8") for m in result.masks)
    # the plumbing engine's masks: one horizontal band per " and " part
    two = [visual.read_mask(tmp_path / "out" / name) for name in final[1]["masks"]]
    assert len(two) == 2 and two[0][:60].all() and not two[0][60:].any() and two[1][60:].all()
    assert final[2]["masks"] == []
    overlay = visual.read_rgb(tmp_path / "out" / final[0]["overlay"])
    assert overlay.shape == (120, 160, 3) and not np.array_equal(overlay, frame(0))


def test_replay_reads_png_masks_like_raw_ones(tmp_path):
    """A node with result_mask_encoding png: the replay decodes compressed_masks[] into the same mask files (and
    so eval scores them) and the recorded results carry the PNGs, which bag_io.result_masks reads back."""
    write_bag(tmp_path / "bag", frames=2, instructions={0: "the cup and the saucer", 1: "segment the cup"})
    code, output = run_replay(tmp_path / "bag", tmp_path / "out", "replay_png", "--fail-on-error",
                              "--node-param", "result_mask_encoding:=png")
    assert code == 0, output
    answers = {r["request"]: r for r in records(tmp_path / "out")}
    assert [answers[i]["status"] for i in (0, 1)] == ["OK", "OK"]
    assert answers[0]["mask_sizes"] == [[120, 160], [120, 160]]
    two = [visual.read_mask(tmp_path / "out" / name) for name in answers[0]["masks"]]
    assert len(two) == 2 and two[0][:60].all() and not two[0][60:].any() and two[1][60:].all()
    results = [r for r in read_output(tmp_path / "out")["/replay_png/result"] if r.status == r.STATUS_OK]
    assert results and all(r.mask_encoding == "png" and r.compressed_masks and not r.masks for r in results)
    for result in results:
        masks = bag_io.result_masks(result)
        assert len(masks) == len(result.compressed_masks) and all(m.shape == (120, 160) for m in masks)
        assert all(np.array_equal(m, visual.read_mask(tmp_path / "out" / name))
                   for m, name in zip(masks, answers[0 if len(masks) == 2 else 1]["masks"], strict=True))


def test_answers_are_matched_by_request_id_whitespace_and_long_instructions_included(tmp_path):
    """The node echoes a stripped instruction cut at 500 characters on the String topic: matched by text, these
    waited for --result-timeout and were reported NO_RESULT. The replay sends lisa_ros/Instruction and matches by id."""
    long = " ".join(["the cup"] * 285)[:2000]
    instructions = {0: "  the cup  ", 1: long, 2: "\tthe mug\n"}
    write_bag(tmp_path / "bag", frames=3, instructions=instructions)
    code, output = run_replay(tmp_path / "bag", tmp_path / "out", "replay_ids", "--fail-on-error",
                              "--node-param", "max_instruction_chars:=2000", timeout=90)
    assert code == 0, output
    answers = records(tmp_path / "out")
    assert [(r["frame_index"], r["instruction"], r["status"]) for r in answers] == [
        (0, "  the cup  ", "OK"), (1, long, "OK"), (2, "\tthe mug\n", "OK")]
    recorded = read_output(tmp_path / "out")
    sent = recorded["/replay_ids_in/instruction/structured"]
    results = {r.request_id: r for r in recorded["/replay_ids/result"]}
    assert len(results) == len(sent) and all(m.request_id in results for m in sent)
    assert {results[m.request_id].instruction for m in sent} == set(instructions.values())  # verbatim echo


def test_failures_are_counted_and_fail_the_run_when_asked(tmp_path):
    write_bag(tmp_path / "bag", frames=2, instructions={0: "segment the cup", 1: "segment the #raise cup"})
    code, output = run_replay(tmp_path / "bag", tmp_path / "out", "replay_fail", "--fail-on-error")
    assert code == 1, output
    assert "2 requests, 1 failed" in output and "ENGINE_ERROR 1" in output
    failed = records(tmp_path / "out")[1]
    assert failed["status"] == "ENGINE_ERROR" and "injected failure" in failed["status_message"]


def test_timed_replay_of_compressed_mcap_with_command_line_instruction(tmp_path):
    stamps = write_bag(tmp_path / "bag", frames=6, storage="mcap", compressed=True,
                       image_topic="/cam/image_raw/compressed")
    code, output = run_replay(tmp_path / "bag", tmp_path / "out", "replay_rate", "--rate", "4",
                              "--instruction", "the mug", "--every", "2", "--output-storage", "sqlite3")
    assert code == 0, output
    assert (tmp_path / "out" / "bag" / "bag.db3").is_file() and storage_of_bag(tmp_path / "out" / "bag") == "sqlite3"
    recorded = read_output(tmp_path / "out")
    assert len(recorded["/replay_rate_in/image/compressed"]) == 6  # published as recorded, compressed
    assert len(recorded["/replay_rate_in/instruction/structured"]) == len(recorded["/replay_rate/result"]) == 3
    answers = records(tmp_path / "out")
    assert [r["status"] for r in answers] == ["OK"] * 3
    for record in answers:
        assert int(record["frame_name"]) in stamps and record["mask_sizes"] == [[120, 160]]


def test_bare_mcap_file_is_replayed_and_evaluated(tmp_path):
    """An .mcap alone (what Foxglove and the mcap CLI write), as the replay's input and as eval's --gt-bag."""
    truth = {0: np.ones((120, 160), bool), 2: np.zeros((120, 160), bool)}
    stamps = write_bag(tmp_path / "bag", frames=3, instructions={0: "segment the cup", 2: "nothing here"},
                       storage="mcap", ground_truth=truth)
    bare = next((tmp_path / "bag").glob("*.mcap")).rename(tmp_path / "recording.mcap")
    code, output = run_replay(bare, tmp_path / "out", "replay_bare", "--fail-on-error")
    assert code == 0, output
    answers = records(tmp_path / "out")
    assert [(r["frame_index"], r["status"]) for r in answers] == [(0, "OK"), (2, "NOT_FOUND")]
    assert [r["answered_stamp_ns"] for r in answers] == [stamps[0], stamps[2]]
    done = subprocess.run([sys.executable, "-P", "-m", "lisa_ros.tools.cli", "eval", str(tmp_path / "out"),
                           "--gt-bag", str(bare)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "out" / "report" / "summary.json").read_text())
    assert (summary["samples"], summary["scored"]) == (2, 2) and "recording.mcap" in summary["ground_truth"]


def test_frames_with_one_stamp_keep_their_own_image_and_ground_truth(tmp_path):
    """A frozen camera clock: three frames, two of them (different pixels) with one stamp."""
    stamp = 1_700_000_000 * 10**9
    full, empty = np.ones((120, 160), bool), np.zeros((120, 160), bool)
    write_bag(tmp_path / "bag", frames=3, instructions=dict.fromkeys(range(3), "segment the cup"),
              stamps=[stamp, stamp, stamp + 10**9], ground_truth={0: full, 1: empty, 2: full})
    code, output = run_replay(tmp_path / "bag", tmp_path / "out", "replay_frozen", "--fail-on-error")
    assert code == 0, output
    answers = records(tmp_path / "out")
    assert [r["frame_index"] for r in answers] == [0, 1, 2]
    for record in answers:  # each frame file holds its own frame's pixels (JPEG: close, not exact)
        saved = visual.read_rgb(tmp_path / "out" / record["frame"]).astype(int)
        errors = [np.abs(saved - frame(i)).mean() for i in range(3)]
        assert int(np.argmin(errors)) == record["frame_index"], (record["frame"], errors)
    assert len({r["frame"] for r in answers}) == 3
    assert [(r["frame_name"], r["frame_occurrence"]) for r in answers] == [
        (str(stamp), 0), (str(stamp), 1), (str(stamp + 10**9), 0)]
    done = subprocess.run([sys.executable, "-P", "-m", "lisa_ros.tools.cli", "eval", str(tmp_path / "out"),
                           "--gt-bag", str(tmp_path / "bag")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = list(csv.DictReader((tmp_path / "out" / "report" / "per_sample.csv").open()))
    # the plumbing engine's one-part mask is the whole frame: IoU 1 against the full truth, 0 against the empty one
    assert [(row["frame_occurrence"], float(row["iou"])) for row in rows] == [("0", 1.0), ("1", 0.0), ("0", 1.0)]


def test_interrupted_replay_leaves_a_readable_bag(tmp_path):
    write_bag(tmp_path / "bag", frames=20, instructions={i: f"segment thing {i}" for i in range(20)})
    out = tmp_path / "out"
    command = replay_command(tmp_path / "bag", out, "replay_stop", "--node-param", "model.delay_s:=0.3")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not ((out / "results.jsonl").is_file() and len(records(out)) >= 2):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=30)[0]
    assert process.returncode == 130, output
    assert "INTERRUPTED" in output
    answered = records(out)
    assert 2 <= len(answered) < 20
    recorded = read_output(out)  # metadata.yaml written, the sqlite data committed
    assert len(recorded["/replay_stop/result"]) >= len([r for r in answered if r["status"] == "OK"])
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True


def test_node_that_fails_configure_fails_the_replay_at_once_with_its_reason(tmp_path):
    """Not after --wait-for-node (600 s here: the run's 120 s limit would fail the test first)."""
    write_bag(tmp_path / "bag", frames=1, instructions={0: "x"})
    code, output = run_replay(tmp_path / "bag", tmp_path / "out", "replay_broken", "--wait-for-node", "600",
                              "--node-param", "model.load_error:=no weights at /models/missing")
    assert code == 3, output
    assert "/replay_broken cannot answer: configure failed: loading the model failed: EngineError: " \
           "no weights at /models/missing" in output
    assert "remappings" not in output


def test_node_left_inactive_is_named_with_its_state_not_blamed_on_remappings(tmp_path):
    write_bag(tmp_path / "bag", frames=1, instructions={0: "x"})
    code, output = run_replay(tmp_path / "bag", tmp_path / "out", "replay_idle", "--wait-for-node", "15",
                              "--node-param", "auto_activate:=false")
    assert code == 3, output
    assert "/replay_idle runs but is not ready within 15 s: it reports 'inactive (model loaded)'" in output
    assert "activate it" in output


def test_no_node_is_a_clear_error(tmp_path):
    write_bag(tmp_path / "bag", frames=1, instructions={0: "x"})
    command = [a for a in replay_command(tmp_path / "bag", tmp_path / "out", "replay_none") if a != "--start-node"]
    done = subprocess.run(command + ["--wait-for-node", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert "no lisa_node within 1 s" in done.stderr and "/replay_none_in/image" in done.stderr


def test_sample_bag_through_the_lisa_engine(tmp_path):
    """The demo's path with an untrained tiny checkpoint (fast to write; its answers are random)."""
    pytest.importorskip("torch")
    from lisa_ros.model.tiny import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "tiny", layout="7b", seed=0, train_steps=0)
    out = tmp_path / "out"
    command = replay_command(REPO / "data" / "sample_bag", out, "replay_lisa",
                             "--instruction", "segment what I could drink from", "--every", "6",
                             "--node-param", f"model.path:={checkpoint.lisa_dir}")
    command[command.index(str(PLUMBING))] = str(REPO / "config" / "lisa_cpu.yaml")
    done = subprocess.run(command, capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))
    assert done.returncode == 0, done.stdout + done.stderr
    answers = records(out)
    assert [r["frame_index"] for r in answers] == [0, 6]
    assert {r["model_id"] for r in answers} == {"lisa-tiny-7b"}
    for record in answers:
        assert record["status"] in ("OK", "NOT_FOUND") and record["answered_stamp_ns"] == int(record["frame_name"])
        assert all(size == [480, 640] for size in record["mask_sizes"])
    recorded = read_output(out)
    assert len(recorded["/replay_lisa/result"]) == len(recorded["/replay_lisa_in/instruction/structured"])
