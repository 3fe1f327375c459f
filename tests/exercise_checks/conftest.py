"""Fixtures for the exercise tests.

``impl`` is the module under test: ``solutions.<module>`` by default, the learner's ``exercises.<module>``
when ``NANOINFER_CHECK_TARGET=exercises`` (``python -m nanoinfer.check`` sets it). ``engine_code()`` is a
context in which an engine built runs that same code for this file's exercise, and its own reference for the
rest. Each file tests one exercise: ``test_ex2_3.py`` tests Exercise 2.3.

Tests marked ``engine`` build a tiny random model; the check command skips them once a test of the same
file has hit a NotImplementedError (nothing to run yet).
"""

from __future__ import annotations

import functools
import importlib
import os
import re
from contextlib import nullcontext
from pathlib import Path

import pytest

from nanoinfer.workbook.check import NOT_DONE, TARGET_ENV
from nanoinfer.workbook.registry import EXERCISES, Exercise, use_exercises


def check_target() -> str:
    target = os.environ.get(TARGET_ENV, "solutions") or "solutions"
    if target not in ("solutions", "exercises"):
        raise ValueError(f"{TARGET_ENV} must be 'solutions' or 'exercises', got {target!r}")
    return target


def exercise_id_of(path: Path) -> str:
    match = re.fullmatch(r"test_ex(\d+)_(\d+)", path.stem)
    if not match:
        raise ValueError(f"{path.name}: exercise test files are named test_ex<major>_<minor>.py")
    return f"{int(match[1])}.{int(match[2])}"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "engine: builds an engine on a tiny random model (skipped by the check "
                                       "command while the exercise still raises NotImplementedError)")


@pytest.fixture(autouse=True)
def _no_exercise_selection_from_env(monkeypatch):
    """Only the exercise under test may run the learner's code, whatever NANOINFER_EXERCISES says."""
    monkeypatch.delenv("NANOINFER_EXERCISES", raising=False)


@pytest.fixture
def exercise(request) -> Exercise:
    return EXERCISES[exercise_id_of(Path(request.node.path))]


@pytest.fixture
def impl(exercise):
    """The module that holds the code under test (solutions.* or exercises.*)."""
    module = importlib.import_module(f"{check_target()}.{exercise.module}")
    return module if check_target() == "solutions" else _NotDoneYet(module)


class _NotDoneYet:
    """The learner's module, with every NotImplementedError turned into an immediate skip marked NOT_DONE.

    Hypothesis would otherwise spend seconds shrinking the inputs of a test whose function is still a stub;
    it re-raises a skip at once. The check command reports these skips as "not done yet" failures.
    """

    def __init__(self, module) -> None:
        self._module = module

    def __getattr__(self, name: str):
        value = getattr(self._module, name)
        if isinstance(value, type):
            return _wrap_class(value)
        if callable(value):
            return _wrap_callable(value)
        return value


def _wrap_callable(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NotImplementedError as e:
            pytest.skip(f"{NOT_DONE}NotImplementedError: {e}")

    return wrapper


@functools.cache
def _wrap_class(cls: type) -> type:
    methods = {name: _wrap_callable(attr) for name, attr in vars(cls).items()
               if callable(attr) and not isinstance(attr, type)
               and (not name.startswith("_") or name in ("__init__", "__call__", "__len__"))}
    return type(cls.__name__, (cls,), {**methods, "__module__": cls.__module__, "__qualname__": cls.__qualname__,
                                       "__doc__": cls.__doc__})


@pytest.fixture
def engine_code(exercise):
    """``with engine_code(): llm = LLM(...)`` builds an engine that runs the code under test."""

    def context():
        return use_exercises(exercise.id) if check_target() == "exercises" else nullcontext()

    return context


@pytest.fixture
def tiny_llm(tiny_llama, engine_code):
    """Build an engine on the tiny random Llama (vocabulary 512) running the code under test."""
    from nanoinfer import LLM

    def build(**knobs):
        knobs = {"max_model_len": 256, "num_kvcache_blocks": 64, **knobs}
        with engine_code():
            return LLM(str(tiny_llama), **knobs)

    return build
