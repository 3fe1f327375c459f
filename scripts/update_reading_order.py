"""Recount docs/reading_order.md's table: each row's line count and the total, from the files themselves.

    python scripts/update_reading_order.py

To list another core file, add its row to the table by hand (any count), then run this.
tests/test_architecture.py fails while a count or the total is stale.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reading_order.md"
ROW = re.compile(r"^\| (\d+) \| \[`([^`]+)`\]\(\.\./[^)]+\) \| [\d,]+ \| (.*) \|$")


def main() -> None:
    lines, total, number = DOC.read_text().splitlines(), 0, 0
    for i, line in enumerate(lines):
        match = ROW.match(line)
        if match:
            path, what = match[2], match[3]
            count = len((ROOT / path).read_text().splitlines())
            number, total = number + 1, total + count
            lines[i] = f"| {number} | [`{path}`](../{path}) | {count} | {what} |"
    text = re.sub(r"\*\*[\d,]+ lines\*\*", f"**{total:,} lines**", "\n".join(lines) + "\n")
    DOC.write_text(text)
    print(f"{number} files, {total:,} lines")


if __name__ == "__main__":
    main()
