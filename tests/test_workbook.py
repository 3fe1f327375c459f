"""The workbook's structure: stubs mirror solutions, every stub raises, every exercise has tests and a check,
every engine hook is where the registry says.

Whether the exercise tests pass on the solutions is tests/exercise_checks itself (its default target).
"""

from __future__ import annotations

import __future__
import importlib
import inspect
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from nanoinfer.workbook.registry import EXERCISES

ROOT = Path(__file__).resolve().parents[1]

MODULES = sorted({e.module for e in EXERCISES.values()})
# Methods of a stub class that must raise (when the class defines them).
CLASS_ENTRY_POINTS = ("__init__", "__call__", "__len__")


def public_names(module) -> dict[str, object]:
    """What a module defines for its users: the exercises' names (a solution may import them from the
    engine), and any other public name it defines itself (no imported modules, classes or functions)."""
    registered = {n for e in EXERCISES.values() if module.__name__.endswith(f".{e.module}") for n in e.names}
    names = {}
    for name, value in vars(module).items():
        if name.startswith("_") or name == "TYPE_CHECKING" or isinstance(value, (types.ModuleType, __future__._Feature)):
            continue
        if name not in registered and getattr(value, "__module__", module.__name__) != module.__name__ and (
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
    """tests/exercise_checks/test_ex<major>_<minor>.py exists and uses the impl fixture"""
    major, minor = ex_id.split(".")
    path = ROOT / "tests" / "exercise_checks" / f"test_ex{major}_{minor}.py"
    assert path.is_file(), f"exercise {ex_id} has no tests: expected {path.relative_to(ROOT)}"
    assert "impl" in path.read_text(), f"{path.name} never uses the impl fixture, so it cannot test the learner's code"


def test_no_stray_test_files():
    """every test_ex file belongs to a registered exercise"""
    for path in (ROOT / "tests" / "exercise_checks").glob("test_ex*.py"):
        major, minor = path.stem.removeprefix("test_ex").split("_")
        assert f"{int(major)}.{int(minor)}" in EXERCISES, f"{path.name} tests an exercise that is not registered"


def test_every_hook_is_where_the_registry_says():
    """Each exercise with an engine hook is looked up (learner_code) in the file its registry entry names,
    and nowhere else; the engine never imports solutions/."""
    calls: dict[str, set[str]] = {}
    for path in (ROOT / "nanoinfer").rglob("*.py"):
        if path.parent.name == "workbook":  # (the registry's docstring shows a call)
            continue
        text = path.read_text()
        for ex_id in re.findall(r'learner_code\("(\d+\.\d+)"', text):
            calls.setdefault(ex_id, set()).add(str(path.relative_to(ROOT)))
        assert not re.search(r"^\s*(from|import) solutions", text, re.M), f"{path} imports solutions/"
    hooks = {e.id: {e.hook} for e in EXERCISES.values() if e.hook}
    assert calls == hooks, f"learner_code calls {calls} do not match the registry's hooks {hooks}"


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
    from nanoinfer.workbook.check import check

    assert check("3.3") is False
    out = capsys.readouterr().out
    assert "Exercise 3.3" in out and "not done yet" in out


def test_selection_follows_the_variable_until_pinned(monkeypatch):
    """NANOINFER_EXERCISES selects for a whole process; use_exercises adds to the selection inside its
    block; select_exercises pins it (a notebook's reference cells, a tensor-parallel worker taking rank 0's
    selection) whatever the variable says; unknown ids are refused by name."""
    from nanoinfer.workbook import registry
    from nanoinfer.workbook.registry import select_exercises, selected, use_exercises

    monkeypatch.setattr(registry, "_pinned", None)
    monkeypatch.setenv("NANOINFER_EXERCISES", "5.1")
    assert selected() == {"5.1"}
    with use_exercises("3.1"):
        assert selected() == {"3.1", "5.1"}
    assert selected() == {"5.1"}
    monkeypatch.setenv("NANOINFER_EXERCISES", "all")
    assert selected() == set(registry.EXERCISES)
    select_exercises()
    assert selected() == frozenset()
    with use_exercises("2.2"):
        assert selected() == {"2.2"}
    assert selected() == frozenset()
    select_exercises("3.1")
    assert selected() == {"3.1"}
    with pytest.raises(ValueError, match="9.9"):
        select_exercises("9.9")
    monkeypatch.setenv("NANOINFER_EXERCISES", "2.2,9.9")
    monkeypatch.setattr(registry, "_pinned", None)
    with pytest.raises(ValueError, match=r"unknown exercise id\(s\) \['9.9'\]"):
        selected()
