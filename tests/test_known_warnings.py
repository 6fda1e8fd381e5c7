"""The commands print no known third-party warning: each is silenced in one place (`known_warnings`), with the reason
it is harmless; any other warning still prints."""

import logging
import subprocess
import sys
import warnings

from curiosft_trl.known_warnings import DEEPSPEED_CPU_LINE, KNOWN_LOG_LINES, KNOWN_WARNINGS, quiet_known_warnings


def test_every_known_warning_is_silenced_with_a_reason_and_others_still_show():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_warnings()
        for _action, message, category, why in KNOWN_WARNINGS:
            assert len(why) > 40, message  # the reason it is harmless, spelled out
            text = message.replace("\\", "")
            warnings.warn(f"{text} (as the library words it)", category)
        warnings.warn("something new", UserWarning)
    assert [str(w.message) for w in caught] == ["something new"]


def test_known_log_lines_are_dropped_and_their_loggers_other_lines_kept():
    quiet_known_warnings()
    quiet_known_warnings()  # idempotent: one filter per line
    for name, prefix, why in KNOWN_LOG_LINES:
        logger = logging.getLogger(name)
        assert len(logger.filters) == len([p for n, p, _ in KNOWN_LOG_LINES if n == name]) and len(why) > 40
        assert not logger.filter(logging.makeLogRecord({"msg": f"{prefix} (and more)", "levelno": logging.WARNING}))
        assert logger.filter(logging.makeLogRecord({"msg": "ZeRO stage 3", "levelno": logging.WARNING}))


def test_a_cli_run_prints_none_of_them():
    """What `curiosft-rl` imports (TRL's vLLM modules, which warned five times; DeepSpeed, which logged its CPU line),
    run through `run_cli` as every CLI runs: nothing on stdout or stderr."""
    code = ("from curiosft_trl.cli import run_cli\n"
            "def main():\n"
            "    import deepspeed, trl.generation.vllm_generation, trl.generation.vllm_client\n"
            "run_cli(main)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "TRL currently supports vLLM" not in done.stderr and DEEPSPEED_CPU_LINE not in done.stdout
    assert done.stderr.strip() == "" and done.stdout.strip() == "", (done.stdout, done.stderr)
