"""The project's set-up files agree with each other."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r for r in project["dependencies"]}
    for extra in ("notebooks", "dev"):
        wanted.update({_name(r): r for r in project["optional-dependencies"][extra]})
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_name(r): r for r in pip if not r.startswith("-e")}
    assert set(listed) == set(wanted), f"only in pyproject: {set(wanted) - set(listed)}; " \
                                       f"only in environment.yml: {set(listed) - set(wanted)}"
    for name, spec in wanted.items():
        assert listed[name].replace(" ", "") == spec.replace(" ", ""), f"{name}: {listed[name]!r} vs {spec!r}"
    assert "flash-attn" not in listed, "flash-attn is a GPU-only extra: a CPU install must not build it"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"`(make test)`", readme).group(1)
    assert command in (ROOT / ".ci" / "run").read_text()


def test_every_c_kernel_is_package_data():
    """The CPU kernels are compiled on the user's machine from their sources: a wheel must carry them."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["nanoinfer"]
    package = ROOT / "nanoinfer"
    shipped = {p for pattern in globs for p in package.glob(pattern)}
    sources = set(package.rglob("*.c"))
    assert sources and sources <= shipped, f"not in package-data: {sorted(map(str, sources - shipped))}"
