"""``python -m nanoinfer.check``: runs nanoinfer/workbook/check.py (``check`` is the notebooks' function)."""

from nanoinfer.workbook.check import check, main  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
