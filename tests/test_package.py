"""The package works outside a checkout: a wheel built from this tree, installed into a fresh environment, runs the
built-in recipes by their short names from another folder, with the chat template they name found inside the
package, and its hints name the commands a pip user has (`curiosft-tiny`, not `make`)."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PIP_NO_INDEX": "1",
           "PYTHONNOUSERSITE": "1"}


def run(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(a) for a in args], cwd=cwd, env={**environ, **OFFLINE, **(env or {})},
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel of this tree installed (`pip install --no-deps`); its other packages are this
    suite's, through a `.pth` line naming this environment's site-packages (a path line: the editable install's own
    `.pth` there is not read, so `curiosft_trl` can only come from the wheel). Returns the venv's bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # built from a copy: setuptools writes build/ and *.egg-info/ beside the sources
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", ".",
                cwd=source)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("curiosft_trl-*.whl")
    venv = tmp / "venv"
    created = run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    assert created.returncode == 0, created.stderr
    site = Path(run(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=tmp).stdout.strip())
    (site / "suite-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", wheel,
                  cwd=tmp)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    return venv / "bin"


def test_the_wheel_ships_the_recipes_and_chat_templates(installed):
    (wheel,) = installed.parent.parent.glob("dist/*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"curiosft_trl/recipes/tiny/curiosft.yaml", "curiosft_trl/recipes/chat_templates/qwen-think.jinja",
            "curiosft_trl/recipes/qwen2.5-math-7b/curiosft.yaml", "curiosft_trl/evaluation/benchmarks.yaml"} <= names


def test_an_installed_wheel_runs_a_built_in_recipe_from_another_folder(installed, tmp_path):
    """From an empty folder: the short name parses (the chat template found in the installed package), `--help`
    works, and the missing tiny base is one error line that names `curiosft-tiny`."""
    parse = ("from curiosft_trl.cli.sft import parse_args; import curiosft_trl; "
             "_, args, _ = parse_args(['--config', 'qwen2.5-math-7b/curiosft', '--bf16', 'false']); "
             "print(curiosft_trl.__file__); print(args.chat_template_path)")
    parsed = run(installed / "python", "-c", parse, cwd=tmp_path)
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    package, template = parsed.stdout.strip().splitlines()[-2:]
    site = installed.parent / "lib"
    assert Path(package).is_relative_to(site) and Path(template).is_relative_to(site), parsed.stdout
    assert Path(template).name == "qwen-think.jinja" and Path(template).is_file()

    helped = run(installed / "curiosft-sft", "--config", "tiny/curiosft", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "--sft_loss" in helped.stdout, helped.stderr[-3000:]

    missing = run(installed / "curiosft-sft", "--config", "tiny/curiosft", cwd=tmp_path)
    error = missing.stderr.strip().splitlines()
    assert missing.returncode == 2 and len(error) == 1 and "Traceback" not in missing.stderr, missing.stderr[-3000:]
    assert error[0].startswith("error: model_name_or_path: cannot load `outputs/tiny/base`")
    assert "Run `curiosft-tiny`" in error[0]
