from nanoinfer.tools.bench import main  # `python -m nanoinfer.bench` runs nanoinfer/tools/bench.py

if __name__ == "__main__":
    main()
