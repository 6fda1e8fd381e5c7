"""Stage 1, SFT: CurioSFT and its baselines as a loss plugin for TRL's `SFTTrainer`.

`losses` (pure tensor functions: the entropy-guided temperature and the token losses; `LOSSES`, the registry of every
`sft_loss`) -> `teacher` (the frozen, periodically synced copy) -> `trainer` (`CurioSFTTrainer`, one seam:
`compute_loss`), configured by `config` (`CurioSFTConfig`), fed by `data` (any supported row layout shaped as TRL
prompt-completion rows).
"""
