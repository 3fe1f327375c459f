"""``python -m nanoinfer.convert``: runs nanoinfer/tools/convert.py."""

from nanoinfer.tools.convert import main

if __name__ == "__main__":
    main()
