"""docs/parameters.md, docs/launch.md and docs/interfaces.md are what the code declares (no rclpy needed).

What the node itself declares is held against the same rows in test/node/test_parameter_reference.py.
"""
from pathlib import Path

import pytest

from lisa_ros.core.node_config import PARAMETERS
from lisa_ros.tools import cli
from lisa_ros.tools.reference import REGENERATE, reference_pages

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("page", ["parameters.md", "launch.md", "interfaces.md"])
def test_committed_reference_page_is_what_the_code_declares(page):
    committed = REPO / "docs" / page
    assert committed.is_file(), f"docs/{page} is missing: run `{REGENERATE}`"
    assert committed.read_text() == reference_pages(REPO)[page], (
        f"docs/{page} differs from what the code declares: run `{REGENERATE}` and commit the page")


def test_check_names_a_stale_page_and_the_fix_and_markdown_rewrites_it(tmp_path, capsys):
    docs = tmp_path / "docs"
    assert cli.main(["params", "--markdown", "--docs", str(docs)]) == 0
    assert cli.main(["params", "--check", "--docs", str(docs)]) == 0
    page = docs / "parameters.md"
    page.write_text(page.read_text().replace("| `max_queue` | integer | `4` |", "| `max_queue` | integer | `5` |"))
    capsys.readouterr()
    assert cli.main(["params", "--check", "--docs", str(docs)]) == 1
    error = capsys.readouterr().err
    assert "parameters.md differs from the code" in error and REGENERATE in error and "launch.md" not in error
    assert cli.main(["params", "--markdown", "--docs", str(docs)]) == 0
    assert page.read_text() == reference_pages(REPO)["parameters.md"]


def test_every_parameter_launch_argument_and_interface_has_its_entry():
    pages = reference_pages(REPO)
    for name in [*PARAMETERS, "model.path", "model.delay_s"]:
        assert f"\n| `{name}` |" in pages["parameters.md"], name
    for argument in ["params_file", "image", "depth_camera_info", "model_path", "detections_enabled", "respawn"]:
        assert f"\n| `{argument}` |" in pages["launch.md"], argument
    for folder, suffix in [("msg", "msg"), ("srv", "srv"), ("action", "action")]:
        for path in (REPO / folder).glob(f"*.{suffix}"):
            assert f"## lisa_ros/{folder}/{path.stem}\n" in pages["interfaces.md"]
            assert f"```\n{path.read_text().rstrip()}\n```" in pages["interfaces.md"], path


def test_without_the_source_checkout_the_pages_are_refused_with_the_fix(tmp_path, capsys):
    assert cli.main(["params", "--check", "--root", str(tmp_path)]) == 2
    assert "--root" in capsys.readouterr().err
