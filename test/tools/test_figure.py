"""``lisa-ros figure`` on a real replay: a lisa_node (plumbing engine, depth and tracking on) over DDS."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from bagfactory import PERIOD_NS, START_NS, write_depth
from lisa_ros.tools import bag_io, figure
from lisa_ros.tools.cli import main

REPO = Path(__file__).resolve().parents[2]
PLUMBING = REPO / "config" / "plumbing_test.yaml"
WIDTH, HEIGHT, SHIFT = 160, 120, 4


def textured_frames(count: int) -> list[np.ndarray]:
    """A smooth random texture panning right SHIFT px a frame: corners the tracker can follow."""
    noise = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH + SHIFT * count), dtype=np.uint8)
    grey = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 1.5), None, 0, 255, cv2.NORM_MINMAX)
    return [np.repeat(grey[:, SHIFT * (count - k):SHIFT * (count - k) + WIDTH, None], 3, axis=2) for k in range(count)]


def write_panning_bag(path: Path, frames: list[np.ndarray]) -> None:
    """Colour frames, a flat 1.5 m aligned depth image and camera info each; one instruction, on frame 0."""
    with bag_io.OutputBag(path, "mcap") as bag:
        for index, image in enumerate(frames):
            time_ns = START_NS + index * PERIOD_NS
            header = bag_io.header(time_ns, "cam")
            bag.write("/camera/image", time_ns, bag_io.raw_image_msg(image, header), bag_io.IMAGE)
            write_depth(bag, time_ns, header, (WIDTH, HEIGHT), 1500)  # and its camera info
            if index == 0:
                bag.write("/instruction", time_ns + 10_000_000, bag_io.typestore().types[bag_io.STRING](
                    data="segment the cup"), bag_io.STRING)


def panels(picture: np.ndarray) -> list[np.ndarray]:
    top = figure.TITLE_H
    return [picture[top:top + figure.PANEL_H, x:x + figure.PANEL_W]
            for x in (figure.GAP + i * (figure.PANEL_W + figure.GAP) for i in range(3))]


@pytest.mark.ros
def test_figure_of_a_replay_shows_frame_mask_point_and_tracked_mask_and_names_the_model(tmp_path):
    frames = textured_frames(3)
    write_panning_bag(tmp_path / "bag", frames)
    out, name = tmp_path / "out", "figure_replay"
    command = [sys.executable, "-P", "-m", "lisa_ros.tools.cli", "replay", str(tmp_path / "bag"), "-o", str(out),
               "--no-progress", "--start-node", "--node-params", str(PLUMBING), "--node-param", "depth.enabled:=true",
               "--node-name", name, "--publish-image", f"/{name}_in/image", "--publish-instruction",
               f"/{name}_in/instruction", "--result-timeout", "30", "--fail-on-error"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    record, = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["status"] == "OK" and record["targets_3d"]["best_index"] == 0
    with bag_io.InputBag(out / "bag") as bag:
        tracked = [m for _, m in bag.messages(f"/{name}/tracked")]
    kept = [m for m in tracked if not all(m.lost)]
    assert kept, [(m.lost_reasons, m.age) for m in tracked]  # the texture is followed onto a later frame

    assert main(["figure", str(out), "-o", str(tmp_path / "figure.png"), "--note", "test run"]) == 0
    with Image.open(tmp_path / "figure.png") as png:
        description = png.info["Description"]
        picture = np.asarray(png.convert("RGB"))
    assert picture.shape == (figure.HEIGHT, figure.WIDTH, 3)
    assert size_kb(tmp_path / "figure.png") < 300
    assert description.startswith("masks by plumbing: not trained LISA weights") and description.endswith("test run")
    frame, answer, later = (p.astype(int) for p in panels(picture))

    # 1: the answered frame itself (grey texture, downscaled; the palette costs a few levels)
    expected = cv2.resize(frames[0], (figure.PANEL_W, figure.PANEL_H), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(frame - expected).mean() < 6
    # 2: the plumbing engine's one mask is the whole frame: tinted blue everywhere but the point's label
    assert ((answer[..., 2] - answer[..., 0]) > 60).mean() > 0.8
    # ... and the centroid, flat 1.5 m: the centre pixel's ray (79.5, 59.5) with fx = 160, c = (80, 60),
    # projected back onto the panel (x2.5) is the red dot
    u, v = round(79.5 * figure.PANEL_W / WIDTH), round(59.5 * figure.PANEL_H / HEIGHT)
    red, green, blue = answer[v, u]
    assert red > 200 and green < 90 and blue < 90, answer[v, u]
    # 3: the tracked mask on a later frame, tinted orange
    assert ((later[..., 0] - later[..., 2]) > 60).mean() > 0.5


def size_kb(path: Path) -> float:
    return path.stat().st_size / 1024


def test_label_says_when_the_masks_are_not_from_trained_lisa():
    assert figure.model_label([{"model_id": "LISA-7B-v1"}], "") == "masks by LISA-7B-v1"
    assert "MEANINGLESS" in figure.model_label([{"model_id": "lisa-tiny-7b"}], "")
    assert figure.model_label([{"status": "NO_RESULT"}], "GPU fp16") == "masks by unknown model. GPU fp16"


def test_a_results_folder_without_masks_is_refused(tmp_path, capsys):
    (tmp_path / "results.jsonl").write_text(json.dumps({"request": 0, "status": "NOT_FOUND", "masks": []}) + "\n")
    assert main(["figure", str(tmp_path), "-o", str(tmp_path / "f.png")]) == 2
    assert "no answer in results.jsonl has a mask" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()
