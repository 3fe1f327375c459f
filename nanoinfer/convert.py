from nanoinfer.tools.convert import main  # `python -m nanoinfer.convert` runs nanoinfer/tools/convert.py

if __name__ == "__main__":
    main()
