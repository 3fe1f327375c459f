"""Reference implementations of the workbook's exercises (the engine runs these unless told otherwise)."""
