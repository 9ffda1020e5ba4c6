"""Check that a venv holds exactly the versions its constraint files pin (CI: constraints are honest).

usage: python scripts/check_constraints.py [--installed-only] CONSTRAINTS.txt [MORE.txt ...]

Run with the venv's own python. Every ``name==version`` pin must be installed at
that version (a local build tag such as ``+cpu`` is ignored); with
``--installed-only`` a pin whose package is absent is allowed (legs that install
a subset, e.g. without extras), but a present package must still match its pin.
Prints one line per file and exits 1 listing every mismatch.
"""
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, List


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> Dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
        if not match:
            raise SystemExit(f"{path}: not a name==version pin: {line!r}")
        pins[normalise(match.group(1))] = match.group(3)
    return pins


def installed() -> Dict[str, str]:
    return {normalise(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def main(argv: List[str]) -> int:
    installed_only = "--installed-only" in argv
    files = [Path(a) for a in argv if a != "--installed-only"]
    if not files:
        raise SystemExit(__doc__)
    have = installed()
    problems = []
    for path in files:
        pins = read_pins(path)
        checked = 0
        for name, version in sorted(pins.items()):
            got = have.get(name)
            if got is None:
                if not installed_only:
                    problems.append(f"{path.name}: {name}=={version} is pinned but not installed")
                continue
            checked += 1
            if got.split("+", 1)[0] != version:
                problems.append(f"{path.name}: {name}=={version} is pinned but {got} is installed")
        print(f"constraints {path.name}: {checked} of {len(pins)} pins installed at the pinned version"
              + (" (absent ones allowed)" if installed_only else ""))
    for problem in problems:
        print("constraints not honest:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
