from nanoinfer.tools.demo import main  # `python -m nanoinfer`: the main job, nanoinfer/tools/demo.py

main()
