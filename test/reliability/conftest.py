"""The reliability suite's ledger: every case counts what it tried and what came back.

Each test asks for the ``case`` fixture and reports, input by input, what it sent
and what it got: ``case.answered(...)`` for a correct answer (a converted input, a
result, or a clear error result), ``case.failed(...)`` for a wrong or unclear one,
and ``case.account(sent, results)`` for instructions sent over DDS, which counts
answers, error results, duplicates and lost instructions (sent, never answered)
from the results actually received. At the end of the session the ledger is
written as a table to ``results/reliability/REPORT.md`` (untracked) and as JSON next
to it; nothing in it is typed by hand. The committed copy, ``test/reliability/REPORT.md``,
changes only on purpose: ``LISA_RELIABILITY_REPORT`` names another target, e.g.
``LISA_RELIABILITY_REPORT=test/reliability/REPORT.md scripts/test.sh test/reliability``.

Categories come from each module's ``CATEGORY`` variable.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import pytest

from lisa_ros.core.types import Status

HERE = Path(__file__).resolve().parent
# A run's report: under the repository's untracked results/, so running tests never edits a tracked file.
DEFAULT_REPORT = HERE.parents[1] / "results" / "reliability" / "REPORT.md"
sys.path.insert(0, str(HERE))  # rel_support (a unique name: test/*/conftest.py all import as "conftest")


@dataclasses.dataclass
class Case:
    nodeid: str
    category: str
    tried: int = 0
    answered: int = 0
    error_results: int = 0
    failed: int = 0
    lost: int = 0
    duplicates: int = 0
    outcome: str = "not run"
    duration_s: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    known_bug: str = ""

    # -- input by input ---------------------------------------------------------------
    def answered_ok(self, what: str = "", *, error: bool = False) -> None:
        """One input got the expected answer (``error``: the expected answer was a clear refusal)."""
        self.tried += 1
        self.answered += 1
        self.error_results += int(error)

    def failed_input(self, what: str) -> None:
        """One input got a wrong, unclear or crashing answer."""
        self.tried += 1
        self.failed += 1
        self.failures.append(what)

    def check(self, ok: bool, what: str, *, error: bool = False) -> bool:
        if ok:
            self.answered_ok(what, error=error)
        else:
            self.failed_input(what)
        return ok

    def note(self, text: str) -> None:
        self.notes.append(text)

    # -- instructions over DDS ----------------------------------------------------------
    def account(self, sent: list[str], results: list, key=lambda r: r.instruction,
                expected_statuses: set[int] | None = None) -> dict:
        """Count each sent instruction (a unique text) against the results received.

        Returns {"lost": [...], "duplicates": {...}, "unexpected": [...]} for assertions.
        """
        by_text = collections.defaultdict(list)
        for result in list(results):
            by_text[key(result)].append(result)
        lost, duplicates, unexpected = [], {}, []
        for text in sent:
            got = by_text.get(text, [])
            self.tried += 1
            if not got:
                self.lost += 1
                lost.append(text)
                continue
            if len(got) > 1:
                self.duplicates += len(got) - 1
                duplicates[text] = len(got)
            status = got[0].status
            if expected_statuses is not None and status not in expected_statuses:
                self.failed += 1
                unexpected.append((text, status, got[0].status_message))
                self.failures.append(f"{text[:40]!r}: status {status} {got[0].status_message[:80]}")
                continue
            self.answered += 1
            self.error_results += int(not Status.is_answered(status))
        return {"lost": lost, "duplicates": duplicates, "unexpected": unexpected}


_CASES: dict[str, Case] = {}
_SELECTED = {"count": 0}


def pytest_collection_modifyitems(session, config, items):
    _SELECTED["count"] = sum(1 for item in items if HERE in Path(str(item.fspath)).resolve().parents)


def _category(item) -> str:
    return getattr(getattr(item, "module", None), "CATEGORY", None) or Path(str(item.fspath)).stem


def pytest_configure(config):
    """Hand the name ``conftest`` back to test/conftest.py once this file is registered.

    Every test/**/conftest.py outside a package is imported as the module ``conftest``; test
    modules elsewhere that do ``from conftest import make_image_msg`` would otherwise get this file
    when it happened to load last. (Runs after pytest has checked this module's path.)
    """
    root = HERE.parent / "conftest.py"
    for plugin in config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) and Path(plugin.__file__).resolve() == root.resolve():
            sys.modules["conftest"] = plugin
            break


@pytest.fixture
def case(request) -> Case:
    return _CASES.setdefault(request.node.nodeid, Case(request.node.nodeid, _category(request.node)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if HERE not in Path(str(item.fspath)).resolve().parents:
        return
    entry = _CASES.setdefault(item.nodeid, Case(item.nodeid, _category(item)))
    entry.duration_s += report.duration  # setup (node start-up) + call + teardown
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if hasattr(report, "wasxfail"):
            entry.outcome = "xfail" if report.skipped else "xpass"
            entry.known_bug = str(report.wasxfail).removeprefix("reason: ")
        else:
            entry.outcome = report.outcome
        if report.failed and not entry.failures:
            entry.failures.append(str(report.longrepr).strip().splitlines()[-1][:200])


def pytest_sessionfinish(session, exitstatus):
    cases = [c for c in _CASES.values() if c.outcome != "not run"]
    if not cases:
        return
    target = Path(os.environ.get("LISA_RELIABILITY_REPORT") or DEFAULT_REPORT)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_report(cases, session))
    target.with_suffix(".json").write_text(json.dumps(
        {"generated": _now(), "cases": [dataclasses.asdict(c) for c in cases]}, indent=1) + "\n")
    _WRITTEN.append(target)


_WRITTEN: list[Path] = []


def pytest_terminal_summary(terminalreporter):
    """Say where the ledger went (runs after pytest_sessionfinish)."""
    for target in _WRITTEN:
        terminalreporter.write_line(f"reliability report: {target} (and {target.with_suffix('.json').name})")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_report(cases: list[Case], session) -> str:
    categories: dict[str, list[Case]] = collections.defaultdict(list)
    for entry in cases:
        categories[entry.category].append(entry)
    fields = ("tried", "answered", "error_results", "failed", "lost", "duplicates")
    lines = [
        "# Reliability suite report",
        "",
        f"Generated by `test/reliability` ({_now()}, {platform.node()}, Python {platform.python_version()},"
        f" {os.cpu_count()} CPUs, ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '-')}, DDS on loopback).",
        f"Every number below is counted by the tests from what happened in this run "
        f"({len(cases)} of the {_SELECTED['count']} selected reliability cases ran).",
        "",
        "- **inputs tried**: images, instructions, service requests, checkpoints and signals the cases sent;",
        "- **answered**: got the expected answer: a converted image / a result / a clear error result;",
        "- **errors**: of the answered, how many were (expected) error results or refusals;",
        "- **failed**: got a wrong, unclear or crashing answer;",
        "- **lost**: instructions sent that never got an answer; **dup**: answers beyond the first;",
        "- **xfail** cases reproduce a known bug (listed under Known bugs with file:line); their lost",
        "  instructions are counted apart, in **lost (known bugs)**, and not in **lost**.",
        "",
        "| category | cases | passed | failed | xfail | inputs tried | answered | errors | failed inputs | lost | dup |"
        " lost (known bugs) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    totals = collections.Counter()
    for category in sorted(categories):
        group = categories[category]
        outcomes = collections.Counter(c.outcome for c in group)
        sums = {f: sum(getattr(c, f) for c in group) for f in fields}
        known = sum(c.lost for c in group if c.outcome == "xfail")
        sums["lost"] -= known
        row = dict(cases=len(group), passed=outcomes["passed"] + outcomes["xpass"], failed_cases=outcomes["failed"],
                   xfail=outcomes["xfail"], known_lost=known, **sums)
        totals.update(row)
        lines.append(_row(category, row))
    lines.append(_row("**total**", totals))
    lines += ["", "## Cases", "",
              "| case | outcome | tried | answered | errors | failed | lost | dup | s |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for entry in sorted(cases, key=lambda c: (c.category, c.nodeid)):
        name = entry.nodeid.split("::", 1)[-1]
        lines.append(f"| `{name}` | {entry.outcome} | {entry.tried} | {entry.answered} | {entry.error_results} | "
                     f"{entry.failed} | {entry.lost} | {entry.duplicates} | {entry.duration_s:.1f} |")
    notes = [(c, n) for c in cases for n in c.notes]
    if notes:
        lines += ["", "## Measurements", ""]
        lines += [f"- `{c.nodeid.split('::', 1)[-1]}`: {n}" for c, n in notes]
    bugs = collections.defaultdict(list)
    for c in cases:
        if c.known_bug:
            bugs[c.known_bug].append(f"`{c.nodeid.split('::', 1)[-1]}` ({c.outcome})")
    if bugs:
        lines += ["", "## Known bugs (xfail cases)", ""]
        lines += [f"- {bug}\n  - {', '.join(names)}" for bug, names in bugs.items()]
    failures = []
    for c in cases:
        failures += [(c, f) for f in c.failures[:10]]
        if len(c.failures) > 10:
            failures.append((c, f"... and {len(c.failures) - 10} more"))
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- `{c.nodeid.split('::', 1)[-1]}` ({c.outcome}): {f}" for c, f in failures]
    return "\n".join(lines) + "\n"


def _row(name: str, row) -> str:
    return (f"| {name} | {row['cases']} | {row['passed']} | {row['failed_cases']} | {row['xfail']} | {row['tried']} | "
            f"{row['answered']} | {row['error_results']} | {row['failed']} | {row['lost']} | {row['duplicates']} | "
            f"{row['known_lost']} |")


@pytest.fixture(scope="session")
def tiny_lisa(tmp_path_factory):
    """A tiny LISA checkpoint (7B token layout, 1 training step: fast, not a useful model)."""
    pytest.importorskip("torch")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lisa_ros.model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("reliability_tiny"), layout="7b", seed=3, train_steps=1)
