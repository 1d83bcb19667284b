"""Each lower bound of pyproject.toml beside the version installed in this environment.

Run by benchmarks/check_lower_bounds.sh inside its scratch venv (after a lowest-direct install):
an installed version above its bound means another requirement lifts it, so the smoke test ran
on that version, not on the bound.

    python benchmarks/lower_bounds_table.py pyproject.toml
"""

import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version

BOUND = re.compile(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?\s*>=\s*([^,;\s]+)")


def release(text: str) -> list[int]:
    parts = [int(part) for part in re.findall(r"\d+", text.split("+")[0])][:3]
    return parts + [0] * (3 - len(parts))


def main(pyproject: str) -> int:
    project = tomllib.load(open(pyproject, "rb"))["project"]
    above = 0
    print("== declared lower bound -> installed")
    for requirement in project["dependencies"] + project["optional-dependencies"]["ollama"]:
        match = BOUND.match(requirement)
        if not match:
            continue
        name, bound = match.group(1), match.group(3)
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "not installed"
        note = ""
        if installed != "not installed" and release(installed) > release(bound):
            note, above = "  (above the bound)", above + 1
        print(f"{name}>={bound} -> {installed}{note}")
    print(f"== {above} installed above their bound")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
