"""One set of versions: environment.yml pins what constraints.txt pins; pyproject stays loose."""

import re
import tomllib

import yaml

from conftest import ROOT


def _pins(lines):
    return {m[1].lower().replace("_", "-"): m[2] for m in (re.match(r"\s*([\w.\-]+)==(\S+)", line) for line in lines) if m}


def test_environment_yml_pins_the_constraints_versions():
    constraints = _pins((ROOT / "constraints.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = _pins(pip_section)
    assert len(pinned) == len(pip_section), "every pip entry of environment.yml is pinned with =="
    for name, version in pinned.items():
        assert constraints.get(name) == version, f"{name}: environment.yml {version}, constraints {constraints.get(name)}"
    assert constraints["torch"] == constraints["torchaudio"] == "2.11.0"  # the pair that loads together (parity extra)


def test_pyproject_bounds_are_loose_and_constraints_cover_them():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = [d for extra in project["optional-dependencies"].values() for d in extra] + project["dependencies"]
    constraints = _pins((ROOT / "constraints.txt").read_text().splitlines())
    for dep in deps:
        assert "==" not in dep, f"{dep}: exact pins belong in constraints.txt (Colab keeps its own torch)"
        name = re.match(r"[\w.\-]+", dep)[0].lower().replace("_", "-")
        assert name in constraints, f"{name} is not pinned in constraints.txt"
    assert any(d.startswith("jupyter-book") and "<2" in d for d in deps)
