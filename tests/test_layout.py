"""The package layout: one package per stage, a public API importable from the top, and `cli/` imported by nothing."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import curiosft_trl

PACKAGE = Path(curiosft_trl.__file__).parent


def test_the_public_api_imports_from_a_fresh_interpreter_and_the_package_import_is_cheap():
    script = """
import json, sys
import curiosft_trl
cheap = {m: m in sys.modules for m in ("trl", "transformers", "vllm", "datasets")}
from curiosft_trl import __all__
# everything but the GRPO trainer, whose TRL base class imports vLLM where it is installed
from curiosft_trl import CurioSFTConfig, CurioSFTTrainer, EvalConfig, evaluate, load_rl_dataset, think_accuracy_reward
vllm_before_grpo = "vllm" in sys.modules
from curiosft_trl import *
names = {name: f"{getattr(curiosft_trl, name).__module__}.{getattr(curiosft_trl, name).__qualname__}" for name in __all__}
print(json.dumps({"cheap": cheap, "names": names, "vllm_before_grpo": vllm_before_grpo}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert not any(report["cheap"].values()), f"`import curiosft_trl` imported {report['cheap']}"
    assert not report["vllm_before_grpo"], "importing the SFT or evaluation API imported vLLM"
    assert report["names"] == {
        "CurioGRPOTrainer": "curiosft_trl.rl.trainer.CurioGRPOTrainer",
        "CurioSFTConfig": "curiosft_trl.sft.config.CurioSFTConfig",
        "CurioSFTTrainer": "curiosft_trl.sft.trainer.CurioSFTTrainer",
        "DataError": "curiosft_trl.errors.DataError",
        "EvalConfig": "curiosft_trl.evaluation.config.EvalConfig",
        "RecipeError": "curiosft_trl.errors.RecipeError",
        "curiosft_per_token_loss": "curiosft_trl.sft.losses.curiosft_per_token_loss",
        "entropy_guided_temperature": "curiosft_trl.sft.losses.entropy_guided_temperature",
        "evaluate": "curiosft_trl.evaluation.harness.evaluate",
        "load_rl_dataset": "curiosft_trl.rl.data.load_rl_dataset",
        "load_sft_dataset": "curiosft_trl.sft.data.load_sft_dataset",
        "think_accuracy_reward": "curiosft_trl.rl.rewards.think_accuracy_reward",
    }


def test_an_unknown_top_level_name_is_an_attribute_error():
    try:
        curiosft_trl.CurioSFTTrainr  # noqa: B018
    except AttributeError as e:
        assert "CurioSFTTrainr" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules that `path` imports, relative imports resolved against its package."""
    package = ".".join(("curiosft_trl", *path.relative_to(PACKAGE).parent.parts))
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, (base, node.module)))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_the_library_never_imports_the_cli():
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(m for m in _imported_modules(path) if m.startswith("curiosft_trl.cli"))
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).parts[0] != "cli"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_import_scanner_resolves_relative_imports():
    # guards the test above against a scanner that resolves nothing: cli/sft.py has `from . import run_cli`
    imported = _imported_modules(PACKAGE / "cli" / "sft.py")
    assert {"curiosft_trl.cli", "curiosft_trl.cli.run_cli", "curiosft_trl.sft.config"} <= imported


def test_each_stage_is_a_package():
    for stage, modules in {"sft": {"config", "losses", "teacher", "trainer", "data"},
                           "rl": {"trainer", "data", "rewards"}}.items():
        assert modules <= {p.stem for p in (PACKAGE / stage).glob("*.py")}, stage


def _package_graph() -> dict[str, set[str]]:
    """Module name -> the package's modules it imports (at the top or inside a function): `curiosft_trl.sft.losses`."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("curiosft_trl", *(parts[:-1] if parts[-1] == "__init__" else parts)))
        modules[name] = path
    return {name: {m for m in _imported_modules(path) if m in modules and m != name} for name, path in modules.items()}


STAGES = ("sft", "rl", "evaluation")


def test_the_stages_import_none_of_each_other_nor_what_sits_above_them():
    above = {f"curiosft_trl.{p}" for p in (*STAGES, "study", "cli", "tiny")}
    offenders = {}
    for name, imported in _package_graph().items():
        stage = (name.split(".") + [""])[1]
        if stage in STAGES:
            bad = {m for m in imported if ".".join(m.split(".")[:2]) in above - {f"curiosft_trl.{stage}"}}
            if bad:
                offenders[name] = sorted(bad)
    assert offenders == {}


def test_no_module_imports_itself_through_another():
    graph = _package_graph()
    cycles = []

    def visit(node, path):
        for nxt in graph[node]:
            if nxt == path[0]:
                cycles.append(" -> ".join([*path, nxt]))
            elif nxt not in path and len(path) < 6:
                visit(nxt, [*path, nxt])

    for start in graph:
        visit(start, [start])
    # a package's `__init__` that re-exports a submodule is not a circle: the submodule never needs the package
    real = [c for c in cycles if not any(c.split(" -> ")[i + 1].startswith(c.split(" -> ")[i] + ".")
                                         for i in range(len(c.split(" -> ")) - 1))]
    assert real == []


def test_the_entry_points_are_thin():
    # Like TRL's `scripts/sft.py`: parse, call the library, report errors; logic that grows here belongs in the library
    lengths = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "cli").glob("*.py")}
    assert {name: n for name, n in lengths.items() if n > 80} == {}
