"""Check an exercise: run its tests against your code in ``exercises/`` and print a short report, from a shell
(``python -m nanoinfer.check 2.3 2.4``, ``make check EX=2.3``; ``all``, ``-v``, ``--solutions``) or a notebook
(``check("2.3")``; docs/workbook.md). The tests, ``tests/exercise_checks/test_ex<major>_<minor>.py``, take the
code under test from the ``impl`` fixture (see ``TARGET_ENV``); those that build an engine run your code inside
it (``nanoinfer.use_exercises``) and the engine's own for every other exercise.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nanoinfer.workbook.registry import EXERCISES, check_ids, sort_key

ROOT = Path(__file__).resolve().parents[2]
TEST_DIR = ROOT / "tests" / "exercise_checks"
TARGET_ENV = "NANOINFER_CHECK_TARGET"  # what the tests check: "exercises" here, "solutions" by default
NOT_DONE = "not done yet: "  # tests/exercise_checks/conftest.py's skip reason for a NotImplementedError
TEST_TIMEOUT_S = 120  # per test: a scheduler that never finishes should fail, not hang


def test_file(ex_id: str) -> Path:
    return TEST_DIR / f"test_ex{ex_id.replace('.', '_')}.py"


def _resolve_ids(ids) -> list[str]:
    ids = [i.strip() for raw in ids for i in str(raw).split(",") if i.strip()]
    if not ids:
        raise ValueError("name an exercise, e.g. 2.3 (or 'all')")
    return sorted(EXERCISES, key=sort_key) if "all" in ids else check_ids(ids)


@dataclass
class Result:
    name: str  # the test's docstring (first line), or its function name
    outcome: str  # "passed", "failed", "skipped"
    message: str = ""
    not_implemented: bool = False


@dataclass
class Report:
    ex_id: str
    results: list[Result] = field(default_factory=list)
    error: str = ""  # the test file could not be collected

    @property
    def passed(self) -> bool:
        return not self.error and bool(self.results) and all(r.outcome == "passed" for r in self.results)

    @property
    def not_started(self) -> bool:
        return any(r.not_implemented for r in self.results)


class _Collector:
    """A pytest plugin that turns test reports into short, readable results per exercise."""

    def __init__(self, file_to_id: dict[str, str]) -> None:
        self.file_to_id = file_to_id
        self.reports = {ex_id: Report(ex_id) for ex_id in file_to_id.values()}
        self._names: dict[str, str] = {}

    def _ex_id(self, path) -> str | None:
        return self.file_to_id.get(str(Path(path).resolve()))

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            ex_id = self._ex_id(report.fspath) if report.fspath else None
            for rep in self.reports.values() if ex_id is None else [self.reports[ex_id]]:
                rep.error = _tail(str(report.longrepr), 12)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item) -> None:
        ex_id = self._ex_id(item.path)
        if ex_id and item.get_closest_marker("engine") and self.reports[ex_id].not_started:
            pytest.skip("skipped: finish the parts that raise NotImplementedError first")

    def pytest_collection_modifyitems(self, items) -> None:
        for item in items:
            doc = getattr(getattr(item, "function", None), "__doc__", None)
            name = doc.strip().splitlines()[0] if doc and doc.strip() else item.name
            if "[" in item.name:
                name += " [" + item.name.split("[", 1)[1]
            self._names[item.nodeid] = name

    def pytest_runtest_logreport(self, report) -> None:
        ex_id = self._ex_id(report.fspath) if report.fspath else None
        if ex_id is None:
            ex_id = next((i for f, i in self.file_to_id.items() if report.nodeid.split("::")[0] in f), None)
        if ex_id is None or not (report.when == "call" or (report.when == "setup" and not report.passed)):
            return
        name = self._names.get(report.nodeid, report.nodeid.split("::")[-1])
        if report.passed:
            result = Result(name, "passed")
        elif report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            reason = reason.removeprefix("Skipped: ")
            not_done = reason.startswith(NOT_DONE)  # a NotImplementedError (see NOT_DONE)
            result = Result(name, "failed" if not_done else "skipped", reason.removeprefix(NOT_DONE), not_done)
        else:
            result = Result(name, "failed", *_failure_message(report))
        self.reports[ex_id].results.append(result)


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _failure_message(report) -> tuple[str, bool]:
    """(message, not_implemented) of a failed test: no traceback or diff, Hypothesis's failing example kept."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else _tail(str(report.longrepr), 6)
    lines = text.removeprefix("AssertionError: ").splitlines()
    message: list[str] = []
    for line in lines:
        if not line.strip() or line.startswith(("assert ", "Failing test case", "Falsifying example")):
            break  # pytest's own rendering of the assert, or Hypothesis's notes, follow
        message.append(line)
    example = next((i for i, ln in enumerate(lines) if ln.startswith(("Failing test case", "Falsifying example"))),
                   len(lines))
    shown = []
    for line in lines[example:]:
        if line.startswith("Explanation") or not line.strip():
            break
        if "impl=" in line or "# The test always failed" in line:
            continue
        shown.append(line.replace("  # or any other generated value", ""))
    message += shown[:12] + (["    ..."] if len(shown) > 12 else [])
    return "\n".join(message[:24]).rstrip(), text.startswith("NotImplementedError")


def run_checks(ids, target: str = "exercises", verbose: bool = False) -> list[Report]:
    """Run the tests of these exercises in this process against ``target`` (exercises or solutions)."""
    ids = _resolve_ids(ids)
    missing = [i for i in ids if not test_file(i).is_file()]
    if missing:
        raise FileNotFoundError(f"no tests for exercise(s) {missing} (expected {test_file(missing[0])})")
    os.environ[TARGET_ENV] = target
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    files = {str(test_file(i).resolve()): i for i in ids}
    collector = _Collector(files)
    # (nbval, a notebook plugin, costs 1.6 s to load: each notebook's check cells pay it otherwise)
    args = [*files, "-p", "no:cacheprovider", "-p", "no:nbval", "-o", f"timeout={TEST_TIMEOUT_S}",
            f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml")]
    args += ["--tb=short", "-q"] if verbose else ["-p", "no:terminal"]
    code = pytest.main(args, plugins=[collector])
    if code in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR):
        raise RuntimeError(f"pytest stopped with exit code {int(code)} ({code.name}); rerun with -v to see why")
    return [collector.reports[i] for i in ids]


def format_report(report: Report, target: str = "exercises") -> str:
    ex = EXERCISES[report.ex_id]
    where = f"{target}/{ex.module}.py"
    lines = [f"Exercise {report.ex_id}: {ex.title}  ({where})"]
    if not report.error and not report.results:
        report.error = "no test ran"
    if report.error:
        lines.append("  ERROR  the tests could not be loaded:")
        lines += ["         " + ln for ln in report.error.splitlines()]
        return "\n".join(lines)
    for r in report.results:
        mark = "todo" if r.not_implemented else {"passed": "ok  ", "failed": "FAIL", "skipped": "skip"}[r.outcome]
        lines.append(f"  {mark}  {r.name}")
        if r.outcome == "failed" and not r.not_implemented:
            lines += [textwrap.indent(r.message, "          ")]
    n_ok = sum(r.outcome == "passed" for r in report.results)
    if report.passed:
        return "\n".join(lines + [f"  passed: all {n_ok} checks."])
    if report.not_started:
        todo = next(r.message for r in report.results if r.not_implemented)
        lines.append(f"  not done yet: {where} still raises {todo.splitlines()[0]}")
    return "\n".join(lines + [f"  {n_ok} of {len(report.results)} checks pass."])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanoinfer.check",
                                     description="Run an exercise's tests against your code in exercises/.")
    parser.add_argument("ids", nargs="+", help="exercise ids such as 2.3 (comma or space separated), or 'all'")
    parser.add_argument("--solutions", action="store_true", help="test the reference solutions instead")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's output and tracebacks")
    args = parser.parse_args(argv)
    target = "solutions" if args.solutions else "exercises"
    try:
        reports = run_checks(args.ids, target, args.verbose)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n\n".join(format_report(r, target) for r in reports))
    if len(reports) > 1:
        print(f"\n{sum(r.passed for r in reports)} of {len(reports)} exercises pass.")
    return 0 if all(r.passed for r in reports) else 1


def check(*ids: str, verbose: bool = False) -> bool:
    """Check exercises from a notebook: print the report, return True when every test passes. The tests run in
    a fresh Python process, so they see your files as they are now; after a pass, your modules are reloaded in
    this kernel, so that ``use_exercises`` runs what was checked."""
    try:
        resolved = _resolve_ids(ids)
    except ValueError as e:
        print(f"error: {e}")
        return False
    cmd = [sys.executable, "-m", "nanoinfer.check", *resolved] + (["-v"] if verbose else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    print(proc.stdout.rstrip())
    if proc.returncode not in (0, 1):
        print(proc.stderr.rstrip()[-3000:])
    if proc.returncode == 0:
        for module in {EXERCISES[i].module for i in resolved}:
            loaded = sys.modules.get(f"exercises.{module}")
            if loaded is not None:
                importlib.reload(loaded)
    return proc.returncode == 0


if __name__ == "__main__":
    sys.exit(main())
