from nanoinfer.workbook.check import check, main  # noqa: F401  `python -m nanoinfer.check`, and notebooks' check()

if __name__ == "__main__":
    raise SystemExit(main())
