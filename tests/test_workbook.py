"""The workbook's structure: stubs mirror solutions, every stub raises, every exercise has tests and a check.

Whether the exercise tests pass on the solutions is tests/exercises itself (run it with the default target).
"""

from __future__ import annotations

import __future__
import importlib
import inspect
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# tests/ holds a folder named exercises/ that Python would take for the `exercises` package: the root comes first.
if str(ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(ROOT))

from nanoinfer.extensions import EXERCISES  # noqa: E402

MODULES = sorted({e.module for e in EXERCISES.values()})
# Methods of a stub class that must raise (when the class defines them).
CLASS_ENTRY_POINTS = ("__init__", "__call__", "__len__")


def public_names(module) -> dict[str, object]:
    """What a module defines for its users: no private names, no imported modules, classes or functions."""
    names = {}
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, (types.ModuleType, __future__._Feature)):
            continue
        if getattr(value, "__module__", module.__name__) != module.__name__ and (
                inspect.isclass(value) or inspect.isfunction(value)):
            continue  # imported, not defined here
        names[name] = value
    return names


def signature_of(obj) -> str:
    return str(inspect.signature(obj))


def class_methods(cls) -> dict[str, str]:
    """Signatures of the methods a class defines itself (public ones and its entry points)."""
    out = {}
    for name, value in vars(cls).items():
        if inspect.isfunction(value) and (not name.startswith("_") or name in CLASS_ENTRY_POINTS):
            out[name] = signature_of(value)
        elif isinstance(value, property) and not name.startswith("_"):
            out[name] = "property"
    return out


@pytest.mark.parametrize("module", MODULES)
def test_exercises_mirror_solutions(module):
    """exercises/<m>.py and solutions/<m>.py define the same public names, with the same signatures"""
    sol = importlib.import_module(f"solutions.{module}")
    ex = importlib.import_module(f"exercises.{module}")
    sol_names, ex_names = public_names(sol), public_names(ex)
    assert sorted(ex_names) == sorted(sol_names), (
        f"{module}: public names differ; only in solutions: {sorted(set(sol_names) - set(ex_names))}, "
        f"only in exercises: {sorted(set(ex_names) - set(sol_names))}")
    for name, s in sol_names.items():
        e = ex_names[name]
        if inspect.isclass(s):
            assert inspect.isclass(e), f"{module}.{name} is a class in solutions but not in exercises"
            assert [b.__name__ for b in s.__bases__] == [b.__name__ for b in e.__bases__], f"{name}: bases differ"
            assert class_methods(e) == class_methods(s), f"{module}.{name}: methods or their signatures differ"
            shared_attrs = {k for k in vars(s) if not k.startswith("_") and not callable(vars(s)[k])}
            for attr in shared_attrs:
                assert getattr(e, attr, None) == getattr(s, attr), f"{module}.{name}.{attr} differs"
        elif callable(s):
            assert callable(e) and signature_of(e) == signature_of(s), (
                f"{module}.{name}: signature {signature_of(e)} in exercises, {signature_of(s)} in solutions")
        else:
            assert e == s, f"{module}.{name}: the constant differs between exercises and solutions"


def _call_with_placeholders(fn):
    """Call with None for every required parameter: a stub raises before it looks at them."""
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return fn(*[None] * len(params))


STUB_CASES = [(e.id, e.module, name) for e in EXERCISES.values() for name in e.names]


@pytest.mark.parametrize("ex_id, module, name", STUB_CASES, ids=[f"{i}-{n}" for i, _, n in STUB_CASES])
def test_every_stub_raises_naming_its_exercise(ex_id, module, name):
    """each registered name in exercises/ raises NotImplementedError("Exercise <id>: ...") and has a docstring"""
    stub = getattr(importlib.import_module(f"exercises.{module}"), name)
    assert (stub.__doc__ or "").strip().startswith(f"Exercise {ex_id}:"), (
        f"exercises.{module}.{name}: the docstring must start with 'Exercise {ex_id}:' and state the task")
    if inspect.isclass(stub):
        entry_points = [m for m in class_methods(stub) if m != "__init__"]
        try:
            instance = _call_with_placeholders(stub)
        except NotImplementedError as e:
            assert str(e).startswith(f"Exercise {ex_id}:"), f"{name}(): message {str(e)!r} must name Exercise {ex_id}"
            return
        assert entry_points, f"{name}: the stub must raise in __init__ or in one of its methods"
        for method in entry_points:
            with pytest.raises(NotImplementedError, match=rf"^Exercise {ex_id}:"):
                _call_with_placeholders(getattr(instance, method))
    else:
        with pytest.raises(NotImplementedError, match=rf"^Exercise {ex_id}:"):
            _call_with_placeholders(stub)


@pytest.mark.parametrize("ex_id", sorted(EXERCISES))
def test_every_exercise_has_tests(ex_id):
    """tests/exercises/test_ex<major>_<minor>.py exists and uses the impl fixture"""
    major, minor = ex_id.split(".")
    path = ROOT / "tests" / "exercises" / f"test_ex{major}_{minor}.py"
    assert path.is_file(), f"exercise {ex_id} has no tests: expected {path.relative_to(ROOT)}"
    assert "impl" in path.read_text(), f"{path.name} never uses the impl fixture, so it cannot test the learner's code"


def test_no_stray_test_files():
    """every test_ex file belongs to a registered exercise"""
    for path in (ROOT / "tests" / "exercises").glob("test_ex*.py"):
        major, minor = path.stem.removeprefix("test_ex").split("_")
        assert f"{int(major)}.{int(minor)}" in EXERCISES, f"{path.name} tests an exercise that is not registered"


def _run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nanoinfer.check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_check_command():
    """python -m nanoinfer.check: fails with 'not done yet' on a stub, passes on the solution, rejects bad ids"""
    stub = _run_check("3.3")
    assert stub.returncode == 1, stub.stdout + stub.stderr
    assert "Exercise 3.3" in stub.stdout and "not done yet" in stub.stdout, stub.stdout
    solved = _run_check("3.3", "--solutions")
    assert solved.returncode == 0, solved.stdout + solved.stderr
    assert "passed" in solved.stdout
    bad = _run_check("9.9")
    assert bad.returncode == 2 and "unknown exercise" in bad.stderr


def test_notebook_check_function(capsys):
    """check() from a notebook prints the report and returns False for a stub"""
    from nanoinfer.check import check

    assert check("3.3") is False
    out = capsys.readouterr().out
    assert "Exercise 3.3" in out and "not done yet" in out


def test_a_worker_selects_exactly_what_rank_0_selected(monkeypatch):
    """A tensor-parallel worker takes rank 0's selection as it is: the environment it inherited adds
    nothing (rank 0 already counted it), and an empty selection stays empty."""
    import threading

    from nanoinfer.extensions import select_exactly, selected, use_exercises

    monkeypatch.setenv("NANOINFER_EXERCISES", "5.1")
    with use_exercises("3.1"):
        assert selected() == {"3.1", "5.1"}
    seen = {}

    def worker(ids):  # in a thread of its own, like the worker's one thread: the override is thread-local
        select_exactly(ids)
        seen[tuple(ids)] = selected()

    for ids in (["3.1"], []):
        t = threading.Thread(target=worker, args=(ids,))
        t.start()
        t.join()
    assert seen == {("3.1",): {"3.1"}, (): frozenset()}
    assert selected() == {"5.1"}  # this thread is untouched
    with pytest.raises(ValueError, match="9.9"):
        select_exactly(["9.9"])


@pytest.mark.parametrize("record", sorted(p.name for p in (ROOT / "notebooks" / "reference_results").iterdir()))
def test_reference_results_say_card_date_and_command(record):
    """A learner without a GPU reads these numbers instead of measuring them: each record names the
    card (or the CPU), the date and the command that produced it."""
    import re

    text = (ROOT / "notebooks" / "reference_results" / record).read_text()
    assert re.search(r"\b20\d\d-\d\d-\d\d\b", text), f"{record}: no date"
    assert re.search(r"\bH[12]00\b|\"device\": \"cpu\"", text), f"{record}: no card"
    assert re.search(r"python3? (-m nanoinfer\.\w+|scripts/\w+\.py)", text), f"{record}: no command"
