#!/usr/bin/env bash
# Refresh the lock (needs uv, which `.[dev]` installs): resolve every install set from pyproject.toml
# against PyPI and pin each package to one exact version.
#   constraints.txt            every extra (the dev set): `pip install -c constraints.txt -e ".[EXTRAS]"`
#                              pins every set, since a constraint installs nothing by itself
#   requirements/core.txt      `pip install ofg`: the library alone
#   requirements/workflow.txt  `ofg[workflow,baselines]`: what every rule's environment holds
#   envs/ofg.yaml              its pip section is requirements/workflow.txt (written below)
# The sets are resolved within constraints.txt, so a package has the same version in each.
# tests/test_envs.py checks that the four files and pyproject.toml agree.
set -euo pipefail
cd "$(dirname "$0")/.."

compile() {
  "${UV:-uv}" pip compile pyproject.toml --universal --python-version 3.11 --quiet \
    --custom-compile-command "bash requirements/compile.sh" "$@"
}
compile --all-extras -c requirements/pins.in -o constraints.txt
compile -c constraints.txt -o requirements/core.txt
compile --extra workflow --extra baselines -c constraints.txt -o requirements/workflow.txt

python3 - <<'PY'
from pathlib import Path

lines = [line.strip() for line in Path("requirements/workflow.txt").read_text().splitlines()]
pins = [line for line in lines if line and not line.startswith(("#", "-"))]
head = Path("envs/ofg.yaml").read_text().split("  - pip:\n")[0]
Path("envs/ofg.yaml").write_text(head + "  - pip:\n" + "".join(f'      - "{pin}"\n' for pin in pins))
PY
echo "wrote constraints.txt, requirements/core.txt, requirements/workflow.txt and envs/ofg.yaml's pins"
