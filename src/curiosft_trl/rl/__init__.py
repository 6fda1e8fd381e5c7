"""Stage 2, RL: GRPO on TRL's `GRPOTrainer` with verifiable math rewards.

`data` (prompts built exactly as in SFT) -> `rewards` (verifiers named in recipes as
`curiosft_trl.rl.rewards.<name>`) -> `trainer` (`CurioGRPOTrainer`: TRL's, plus `pass@G` and `grader_timeouts`).
"""
