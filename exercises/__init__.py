"""Your implementations of the workbook's exercises. Each stub says what to build and how it is checked.

Run one exercise's checks with ``make check EX=2.3``; select your code inside the engine with
``NANOINFER_EXERCISES=2.3`` or ``nanoinfer.use_exercises("2.3")``.
"""
