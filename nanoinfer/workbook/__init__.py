"""The workbook's machinery: the exercise registry with the engine's hooks (registry.py) and the check
command (check.py). The engine imports only ``learner_code`` from here."""

from nanoinfer.workbook.registry import EXERCISES, learner_code, select_exercises, selected, use_exercises

__all__ = ["EXERCISES", "learner_code", "select_exercises", "selected", "use_exercises"]
