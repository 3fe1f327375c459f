"""The measured records in notebooks/reference_results/ and the docs that cite them.

A learner without a GPU reads these records instead of measuring, and a maintainer reruns them: each must
say on which card, on which date, by which command and at which commit it was measured; every script a
record or a current doc names must exist; every record the docs name must exist. Plain file checks, no GPU.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "notebooks" / "reference_results"
FACTS = ("card", "date", "command", "commit")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# a python/python3 command line (python -m ..., or a .py file), or a scripts/... invocation
COMMAND = re.compile(r"(?:^|[\s;&(=/])python3?\s+(?:-m\s+\w|\S+\.py\b)|(?:^|[\s;&(])(?:bash\s+)?scripts/\S+")
SCRIPT = re.compile(r"\bscripts/[\w-]+(?:\.[A-Za-z0-9]+)*")
# a script read from a commit: "6a4af5a:scripts/step_gaps.py" (allowed for scripts deleted since)
PINNED = re.compile(r"\b([0-9a-f]{7,40}):(scripts/[\w-]+(?:\.[A-Za-z0-9]+)*)")
RECORD_NAME = re.compile(r"\b(?:reference_results/)?((?:h[12]00|cpu)[\w*-]*\.(?:json|txt))\b")


def record_files() -> list[Path]:
    return sorted(p for p in RECORDS.iterdir() if p.is_file() and not p.name.startswith("."))


def current_docs() -> list[Path]:
    """docs/*.md."""
    return sorted((ROOT / "docs").glob("*.md"))


def facts(path: Path) -> dict[str, str]:
    """The four facts of a record: top-level keys of a JSON record, ``key: value`` header lines of a text one."""
    text = path.read_text()
    if path.suffix == ".json":
        data = json.loads(text)
        assert isinstance(data, dict), f"{path.name}: a JSON record is an object with the facts at its top level"
        return {k: data.get(k) for k in FACTS}
    header = {}
    for line in text.splitlines()[:12]:  # the header lines at the top, before the profile's tables
        key, sep, value = line.partition(": ")
        if sep and key in FACTS:
            header.setdefault(key, value)
    return {k: header.get(k) for k in FACTS}


def test_there_are_records():
    names = [p.name for p in record_files()]
    assert any(n.endswith(".json") for n in names) and any(n.endswith(".txt") for n in names), names


@pytest.mark.parametrize("path", record_files(), ids=lambda p: p.name)
def test_record_names_card_date_command_and_commit(path):
    found = facts(path)
    for key in FACTS:
        value = found[key]
        assert isinstance(value, str) and value.strip(), f"{path.name}: no {key}"
    assert DATE.match(found["date"]), f"{path.name}: date {found['date']!r} is not YYYY-MM-DD"
    assert COMMAND.search(found["command"]), \
        f"{path.name}: command {found['command'][:80]!r} is neither a python command line nor a scripts/ invocation"
    assert re.search(r"\b[0-9a-f]{7,40}\b|unknown", found["commit"]), \
        f"{path.name}: commit {found['commit'][:80]!r} names no commit hash (or says why it is unknown)"


def _script_mentions(path: Path) -> list[str]:
    """Scripts named in ``path`` that are not in the tree, unless read from a commit named in the same file
    (``<hash>:scripts/<name>``, for a one-off script deleted after its record was made)."""
    text = path.read_text()
    pinned = {}
    for commit, script in PINNED.findall(text):
        pinned.setdefault(script, commit)
    missing = []
    for script in sorted(set(SCRIPT.findall(text))):
        if (ROOT / script).exists():
            continue
        if script in pinned:
            if _in_commit(pinned[script], script) is not False:
                continue
            missing.append(f"{script} (not in commit {pinned[script]})")
            continue
        missing.append(script)
    return missing


def _in_commit(commit: str, script: str) -> bool | None:
    """Whether ``commit`` holds ``script``; None when git or the commit is not at hand (a shallow clone)."""
    if not (ROOT / ".git").exists() or not shutil.which("git"):
        return None
    run = lambda *args: subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True).returncode
    if run("cat-file", "-e", f"{commit}^{{commit}}"):
        return None
    return run("cat-file", "-e", f"{commit}:{script}") == 0


@pytest.mark.parametrize("path", record_files() + current_docs(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_scripts_named_in_records_and_docs_exist(path):
    missing = _script_mentions(path)
    assert not missing, f"{path.relative_to(ROOT)} names scripts that do not exist: {missing}"


@pytest.mark.parametrize("doc", ["docs/benchmarks.md", "docs/tensor_parallel.md", "README.md"])
def test_records_named_in_docs_exist(doc):
    names = set(RECORD_NAME.findall((ROOT / doc).read_text()))
    if doc.startswith("docs/"):
        assert names, f"{doc} cites no record"
    missing = [n for n in sorted(names) if not any(RECORDS.glob(n))]
    assert not missing, f"{doc} names records that do not exist in notebooks/reference_results/: {missing}"
