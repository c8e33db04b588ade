"""The README's adaptation loop (scripts/adapt_demo.sh) end to end: replay, export, import, finetune,
the adapter served by lisa_node over DDS, eval before and after; and the README lists the same commands."""
import json
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "adapt_demo.sh"


def lisa_ros_commands(text: str) -> list[str]:
    """The lisa-ros sub-commands a text runs, in order (the script calls its shell function lisa_ros)."""
    return re.findall(r"^\s*lisa[-_]ros (\S+)", text, re.M)


def test_the_readme_section_runs_the_scripts_commands():
    section = (REPO / "README.md").read_text().split("## Adapt LISA to your robot's scenes", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    assert lisa_ros_commands(block) == lisa_ros_commands(SCRIPT.read_text())
    assert "scripts/adapt_demo.sh" in section


@pytest.mark.ros
def test_adapt_demo_exports_imports_finetunes_and_serves_the_adapter(tmp_path):
    out = tmp_path / "adapt"
    run = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    coco = json.loads((out / "labels" / "coco.json").read_text())
    assert len(coco["images"]) >= 1 and coco["annotations"]
    dataset = json.loads((out / "dataset" / "dataset.json").read_text())
    assert dataset["train"] > 0 and dataset["val"] > 0
    assert (out / "sample-adapter" / "adapter" / "adapter_model.safetensors").is_file()
    before, after = ([json.loads(line) for line in (out / name / "results.jsonl").read_text().splitlines()]
                     for name in ("before", "after"))
    assert len(before) == len(after) == 10
    assert {r["model_id"] for r in before} == {"lisa-tiny-7b"}
    assert {r["model_id"] for r in after} == {"lisa-tiny-7b+sample-adapter"}  # served with the adapter over DDS
    scores = [json.loads((out / name / "report" / "summary.json").read_text())["gIoU"] for name in ("before", "after")]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert "warning: the adapter scores below the base" not in run.stderr
