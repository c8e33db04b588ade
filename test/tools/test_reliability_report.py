"""A reliability run writes its ledger under results/ (untracked), never over the committed
test/reliability/REPORT.md, unless LISA_RELIABILITY_REPORT asks for it."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "test" / "reliability" / "REPORT.md"
ONE_CASE = ["test/reliability/test_images_unit.py", "-k", "test_step_far_beyond_data_is_refused_without_allocating"]


def run_reliability_case(**env_changes) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LISA_RELIABILITY_REPORT"} | env_changes
    return subprocess.run([sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", *ONE_CASE],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_a_run_writes_under_results_and_leaves_the_committed_report_alone():
    committed = (COMMITTED.read_bytes(), COMMITTED.with_suffix(".json").read_bytes())
    default = REPO / "results" / "reliability" / "REPORT.md"
    done = run_reliability_case()
    assert done.returncode == 0, done.stdout + done.stderr
    assert (COMMITTED.read_bytes(), COMMITTED.with_suffix(".json").read_bytes()) == committed
    assert f"reliability report: {default}" in done.stdout
    assert "test_step_far_beyond_data_is_refused_without_allocating" in default.read_text()
    assert default.with_suffix(".json").is_file()


def test_the_target_can_be_chosen(tmp_path):
    target = tmp_path / "chosen" / "REPORT.md"
    done = run_reliability_case(LISA_RELIABILITY_REPORT=str(target))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test_step_far_beyond_data_is_refused_without_allocating" in target.read_text()
    assert f"reliability report: {target}" in done.stdout
