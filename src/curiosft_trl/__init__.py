"""CurioSFT: entropy-preserving SFT via adaptive self-distillation, as a TRL plugin."""

__version__ = "0.1.0"
