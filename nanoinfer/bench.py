"""``python -m nanoinfer.bench``: runs nanoinfer/tools/bench.py."""

from nanoinfer.tools.bench import main

if __name__ == "__main__":
    main()
