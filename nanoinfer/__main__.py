"""``python -m nanoinfer``: runs the main job, nanoinfer/tools/demo.py."""

from nanoinfer.tools.demo import main

main()
