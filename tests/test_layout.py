"""The repository's layout as promised: every recipe loads, recipes/ holds no code, the package's imports
point one way down the pipeline, source files stay short, and every repository path that README, docs
and experiment READMEs name exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from llmcxr.config import load_config
from llmcxr.training import TrainRecipe
from llmcxr.vq.config import VQTrainConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "llmcxr"

# The pipeline, bottom to top: a module may import its own package and any layer below it, never one
# beside or above it (README "The pipeline in the source tree").
LAYERS = [
    ("errors", "findings", "hashing"),
    ("atomic", "tables", "records"),
    ("config",),
    ("imaging",),
    ("reports",),
    ("datasets",),
    ("synth",),
    ("metrics",),
    ("vq",),
    ("model",),
    ("prompt",),
    ("training", "generation"),
    ("evaluation",),
    ("demo", "serve"),
    ("cli",),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
MAX_SOURCE_LINES = 500


def _recipes(kind: str) -> list[Path]:
    found = [*(ROOT / "recipes").rglob("*.yaml"), *(ROOT / "experiments").rglob("*.yaml")]
    return sorted(p for p in found if ("vq" in p.parent.parts) == (kind == "vq"))


def test_every_training_recipe_loads() -> None:
    recipes = _recipes("train")
    assert len(recipes) >= 20
    for path in recipes:
        recipe = load_config(TrainRecipe, path)
        assert recipe.output_dir and recipe.data, path
        if recipe.deepspeed:
            assert (ROOT / recipe.deepspeed).is_file(), path


def test_every_vq_recipe_loads() -> None:
    recipes = _recipes("vq")
    assert len(recipes) >= 8
    for path in recipes:
        assert load_config(VQTrainConfig, path).steps > 0, path


def test_recipes_hold_no_code() -> None:
    code = [p for p in (ROOT / "recipes").rglob("*") if p.suffix in (".py", ".sh")]
    assert code == [], "recipes are data: scripts belong in tools/, benchmarks/ or experiments/"


def _llmcxr_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "llmcxr":
            names = [f"llmcxr.{a.name}" for a in node.names] if node.module == "llmcxr" else [node.module]
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "llmcxr"]
    return found


def upward_imports(package: Path = PACKAGE) -> list[str]:
    """'file:line package -> module' for every import of a package beside or above the importer's."""
    upward = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        own = relative.parts[0].removesuffix(".py")
        for line, module in _llmcxr_imports(path):
            target = module.split(".")[1] if "." in module else own
            if target != own and RANK.get(target, len(LAYERS)) >= RANK.get(own, -1):
                upward.append(f"{relative}:{line} {own} -> {module}")
    return upward


def test_every_package_has_a_layer() -> None:
    packages = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    packages -= {"__init__", "__pycache__", "py"}
    assert packages - set(RANK) == set()


def test_imports_point_down_the_pipeline() -> None:
    assert upward_imports() == []


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "run.py").write_text("from llmcxr.generation import LLMCXR\n")
    (tmp_path / "model.py").write_text("import llmcxr.prompt.dolly\nfrom llmcxr import vq\n")
    assert upward_imports(tmp_path) == [
        "metrics/run.py:1 metrics -> llmcxr.generation",
        "model.py:1 model -> llmcxr.prompt.dolly",
    ]


def test_source_files_stay_short() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_SOURCE_LINES
    }
    assert long == {}


# Repository paths in prose: a top-level folder of the repository, then a path without spaces.
PATH_IN_TEXT = re.compile(
    r"(?<![\w./-])((?:benchmarks|recipes|experiments|docs|checkpoints|tools|src|tests)/[\w./*-]*[\w*/])"
)
# Paths a reader makes by following the docs (run outputs, user data, weights the project cannot ship).
MADE_BY_THE_READER = ("checkpoints/dolly-v2-3b", "checkpoints/vq-paper", "checkpoints/llmcxr-smol")


def documents() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").rglob("*.md")),
        *sorted((ROOT / "experiments").rglob("*.md")),
    ]


def referenced_paths(text: str) -> list[str]:
    return [m.rstrip(".") for m in PATH_IN_TEXT.findall(text)]


def missing_paths(document: Path) -> list[str]:
    missing = []
    for reference in referenced_paths(document.read_text(encoding="utf-8")):
        if reference.startswith(MADE_BY_THE_READER):
            continue
        if "*" in reference:
            found = list(ROOT.glob(reference))
        else:
            found = [ROOT / reference] if (ROOT / reference).exists() else []
        if not found:
            missing.append(reference)
    return missing


def test_link_checker_finds_paths_and_misses() -> None:
    text = "See `benchmarks/results/eval_tiny.json`, experiments/*/README.md and docs/nothing_here.md."
    assert referenced_paths(text) == [
        "benchmarks/results/eval_tiny.json",
        "experiments/*/README.md",
        "docs/nothing_here.md",
    ]


@pytest.mark.parametrize("document", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_paths_in_docs_resolve(document: Path) -> None:
    assert missing_paths(document) == []


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").rglob("*.yaml")), ids=lambda p: p.name)
def test_user_recipes_say_what_they_are_for(recipe: Path) -> None:
    header = []
    for line in recipe.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert len(header) >= 2, f"{recipe}: a header of comment lines saying what it is for and what it needs"
