"""The package's structure: no import cycle, result paths spelled in ofg.layout only, names defined once."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from ofg.data import DATASETS
from ofg.inference import LABEL_MODES
from ofg.models import MODEL_NAMES

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "ofg"
#: the top-level names of the results tree; only ofg/layout.py may spell them
RESULT_NAMES = ("runs", "metrics", "tables", "figures", "samples", "benchmarks", "notebooks", "refinement",
                "timing", "summary.json", "history.csv", "checkpoints", "best.pt", "last.pt", "train.log",
                "teacher_fields", "robustness")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The ofg modules ``path`` imports (``from ofg.x import y`` counts ofg.x.y when that is a module)."""
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    resolved = set()
    for target in found:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: imported_modules(path, set(paths)) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a list of modules) or None; a package's own __init__ is no cycle."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if node.startswith(target + "."):
                continue  # a submodule importing its own package's __init__ is how packages load
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_ofg():
    assert find_cycle(import_graph()) is None


def test_ofg_imports_sit_at_module_top():
    """Imports of ofg modules inside function bodies hide what a module touches."""
    hidden = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("ofg")):
                    hidden.append(f"{path.relative_to(REPO)}:{node.lineno}")
                elif isinstance(node, ast.Import) and any(a.name.startswith("ofg") for a in node.names):
                    hidden.append(f"{path.relative_to(REPO)}:{node.lineno}")
    # the data CLI imports a loader's optional dependency lazily; the benchmark its sections
    allowed = ("src/ofg/data/__main__.py", "src/ofg/bench/", "src/ofg/data/synthesis.py")
    assert [h for h in hidden if not h.startswith(allowed)] == []


def path_literal_offenders(path: Path) -> list[str]:
    """Strings of ``path``'s code that spell a results name as a path: an operand of ``/`` that is one
    of :data:`RESULT_NAMES`, a string with a slash that has one as a component, or a results file name."""
    tree = ast.parse(path.read_text())
    operands = {id(side) for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)
                for side in (n.left, n.right)}
    files = {name for name in RESULT_NAMES if "." in name}
    offenders = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        text = node.value
        parts = set(text.split("/"))
        if ((id(node) in operands and text in RESULT_NAMES) or ("/" in text and parts & set(RESULT_NAMES))
                or text in files):
            offenders.append(f"{path.name}:{node.lineno}: {text!r}")
    return offenders


def test_path_literal_check_catches_a_planted_literal(tmp_path):
    planted = tmp_path / "bad.py"
    planted.write_text('"""Docs may say runs/ freely."""\nfrom pathlib import Path\nA = Path("r") / "metrics"\n'
                       'B = "checkpoints/last.pt"\nC = f"{A}/tables/x.csv"\nD = {"runs": 1}["runs"]\n')
    assert sorted(line.split(":")[1] for line in path_literal_offenders(planted)) == ["3", "4", "5"]


def test_results_paths_are_spelled_in_the_layout_module_only():
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name != "layout.py":
            offenders += path_literal_offenders(path)
    for path in [REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")]:
        text = path.read_text()
        offenders += [f"{path.name}: {m.group(0)!r}" for m in re.finditer(
            r"""["'][^"'\n]*/(runs|metrics|tables|figures|samples|benchmarks|notebooks)/[^"'\n]*["']""", text)]
    assert offenders == []


def test_schema_enums_equal_the_names_the_code_defines():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    definitions = schema["definitions"]
    assert sorted(definitions["dataset_name"]["enum"]) == sorted(DATASETS)
    assert sorted(definitions["model_name"]["enum"]) == sorted(MODEL_NAMES)
    evaluation = schema["properties"]["evaluation"]["properties"]
    assert sorted(evaluation["label_mode"]["enum"]) == sorted(LABEL_MODES)


def test_src_never_points_to_a_file_outside_the_repository():
    mentions = [str(p.relative_to(REPO)) for p in SRC.rglob("*.py") if "PAPER.md" in p.read_text()]
    assert mentions == []
