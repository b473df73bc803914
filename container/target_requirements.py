"""Print pyproject.toml's runtime dependencies that apply on another machine, markers dropped.

    python target_requirements.py pyproject.toml aarch64 > requirements.txt

The image's build stage runs pip on the build machine for the target's platform
(`pip install --platform ...`), and pip evaluates environment markers for the machine it
runs on: tl2cgen's `platform_machine != 'aarch64'` would keep it in an arm64 image. Here
the markers are evaluated for the target's `platform_machine` instead.
"""
import sys
import tomllib

from packaging.requirements import Requirement


def target_requirements(pyproject: str, machine: str) -> list[str]:
    with open(pyproject, "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    kept = []
    for dependency in dependencies:
        requirement = Requirement(dependency)
        if requirement.marker is None or requirement.marker.evaluate({"platform_machine": machine}):
            requirement.marker = None
            kept.append(str(requirement))
    return kept


if __name__ == "__main__":
    print("\n".join(target_requirements(sys.argv[1], sys.argv[2])))
