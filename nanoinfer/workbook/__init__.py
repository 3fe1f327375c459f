"""The workbook's machinery: the exercise registry with the engine's hooks (registry.py) and the check
command (check.py). The engine's components call ``learner_code`` at their hooks; the model runner and
the tensor-parallel workers read and pass on the selection (``selected``, ``select_exercises``)."""

from nanoinfer.workbook.registry import EXERCISES, learner_code, select_exercises, selected, use_exercises

__all__ = ["EXERCISES", "learner_code", "select_exercises", "selected", "use_exercises"]
