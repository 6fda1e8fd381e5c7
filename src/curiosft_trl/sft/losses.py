"""The CurioSFT token loss and the baselines it is compared with, as pure tensor functions, and `LOSSES`, the one
table of every `sft_loss`.

No trainer, config or I/O in here: the trainer calls these, and so do the tests and the benchmark.
Notation (spec, "The loss"): `z` teacher logits at temperature 1, `y` gold token, `l = log pi_theta(y)` the
student log-prob, `tau` the per-token teacher temperature, `q = log softmax(z / tau)[y]`.

    L_t = -l_t + kd_coef * 0.5 * (l_t - q_t)^2        dL/dl_t = -(1 - (l_t - q_t))

The temperature rule's constants travel together as a `TemperatureRule`, whose field names are `CurioSFTConfig`'s.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
# Logits per float32 scratch buffer of `teacher_gold_logprobs` on the CPU (16 MiB: ~28 rows of a 152k vocabulary, a
# tenth of a 256-token chunk's logits). On a GPU the whole chunk is one block: each block launches ~10 kernels, and
# 28-row blocks made the H200 wait on the host (the teacher's temperature and log-prob took 158 ms a step instead of
# 101, bench/results/profile-h200-onepass-head.json); a chunk's two buffers are what the chunk's logits already cost.
SCRATCH_NUMEL = 2**22
# Bytes per logit of one teacher chunk: the head's logits (float32 at most) and `teacher_gold_logprobs`' two float32
# `(tokens, V)` buffers, which on a GPU span the whole chunk
CHUNK_BYTES_PER_LOGIT = 12
SOLVERS = ("newton", "bisection")
KD_COEF = 1.0  # the paper's weight of the distillation term


@dataclass(frozen=True)
class TemperatureRule:
    """The constants of Entropy-Guided Temperature Selection (`entropy_guided_temperature`), named as the
    `CurioSFTConfig` fields (and recipe keys) that set them; the defaults are the paper's (`CurioSFTConfig` takes
    its defaults from here). `temperature_solver` and `num_bisection_iterations` choose how the root is found."""

    tau_min: float = 1.1
    tau_max: float = 1.5
    temperature_top_k: int = 512
    entropy_pivot: float = 1.2
    entropy_slope: float = 2.0
    max_entropy_increment: float = 0.5
    low_entropy_threshold: float = 0.03
    temperature_solver: str = "newton"
    num_bisection_iterations: int = 20

    def __post_init__(self):
        if self.tau_min > self.tau_max:
            raise ValueError(f"tau_min ({self.tau_min}) must be <= tau_max ({self.tau_max}).")
        if self.tau_min <= 0:
            raise ValueError(f"tau_min ({self.tau_min}) must be a positive temperature.")
        if self.temperature_solver not in SOLVERS:
            raise ValueError(f"temperature_solver: unknown value `{self.temperature_solver}`; expected one of "
                             f"{', '.join(f'`{s}`' for s in SOLVERS)}.")


PAPER_RULE = TemperatureRule()


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of `softmax(logits)`: `(..., V) -> (...)`, computed in the input's dtype."""
    log_p = F.log_softmax(logits, dim=-1)
    # A batched dot product rather than `(p * log_p).sum()`: one fewer (..., V) buffer written (full-vocab rows)
    return -(log_p.exp().unsqueeze(-2) @ log_p.unsqueeze(-1)).squeeze(-1).squeeze(-1)


def entropy_guided_temperature(teacher_logits: torch.Tensor, rule: TemperatureRule = PAPER_RULE) -> torch.Tensor:
    """Entropy-Guided Temperature Selection: teacher logits `(..., V)` at temperature 1 -> tau `(...)` (float32).

    1. `H` = entropy of the renormalised top-`temperature_top_k` logits;
    2. target `H* = H + max_entropy_increment * sigmoid(entropy_slope * (H - entropy_pivot))`;
    3. solve `H_K(z / tau) = H*` on `[tau_min, tau_max]` (entropy rises with tau, so the root is unique), clamping
       to an end when the target is out of reach: `temperature_solver="newton"` (default) runs a few bracketed
       Newton steps (`newton_iterations`), to the root's float64 precision; `"bisection"` runs
       `num_bisection_iterations` bisection steps, as the authors' code does (20: within 2e-7 of the root on
       `[1.1, 1.5]`);
    4. `tau = tau_min` where the full-vocabulary entropy is `<= low_entropy_threshold`.

    Steps 1-3 are `solve_temperature`; the trainer runs step 4 inside `teacher_gold_logprobs`' vocabulary sweep.
    """
    logits = teacher_logits.detach()
    top = logits.topk(min(rule.temperature_top_k, logits.size(-1)), dim=-1).values
    tau = solve_temperature(top, rule)
    return torch.where(entropy_from_logits(logits.float()) <= rule.low_entropy_threshold, rule.tau_min, tau)


def solve_temperature(top: torch.Tensor, rule: TemperatureRule = PAPER_RULE,
                      dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Steps 1-3 of `entropy_guided_temperature`: the top-k logits `(..., K)`, sorted with the max first (as
    `topk` returns them) -> tau `(...)` (float32), before the low-entropy rule of step 4. `dtype` is the solve's
    (float32 only for `bench/teacher_side.py`'s comparison)."""
    tau_min, tau_max = rule.tau_min, rule.tau_max
    # The solve runs on at most `temperature_top_k` columns, so float64 costs little and keeps tau exact to ~1e-7
    # even where the entropy curve is flat in tau (near-one-hot or near-uniform rows). float32 passes the float64
    # reference tests (worst tau 5.7e-6 relative against their 1e-5: a 2x margin) but saves only ~0.6 ms of a ~300 ms
    # H200 step (3.2 vs 2.6 ms), so it is not worth that margin (README, "Performance")
    top = top.detach().to(dtype)
    top = top - top[..., :1]  # entropies do not change with a shift; centred once, not in every solver step
    entropy_k = entropy_from_logits(top)
    target = entropy_k + rule.max_entropy_increment * torch.sigmoid(
        rule.entropy_slope * (entropy_k - rule.entropy_pivot))
    at_min, _ = _entropy_and_slope(top, torch.full_like(entropy_k, tau_min))
    at_max, _ = _entropy_and_slope(top, torch.full_like(entropy_k, tau_max))
    if rule.temperature_solver == "newton":
        tau = _newton_tau(top, target, tau_min, tau_max, at_min, at_max)
    else:
        tau = _bisection_tau(top, target, tau_min, tau_max, rule.num_bisection_iterations)
    tau = torch.where(at_min >= target, tau_min, tau)
    tau = torch.where(at_max <= target, tau_max, tau)
    return tau.float()


def newton_iterations(tau_min: float, tau_max: float) -> int:
    """From a regula-falsi start, Newton's steps reach the root to ~1e-11 within 4 steps on brackets up to
    `tau_max / tau_min = 1.5` (the paper's [1.1, 1.5]), and within 8 on brackets as wide as [0.5, 3.0] with
    `temperature_top_k` 20 and [1.1, 5.0] with 512 (tests/test_losses.py checks them against a 60-step bisection). A fixed count per call: no
    host sync."""
    return 4 if tau_max <= 1.5 * tau_min else 8


def _entropy_and_slope(top: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy of `softmax(z / tau)` and its derivative in tau: `(..., K), (...) -> (H (...), dH/dtau (...))`.

    `dH/dtau = Var[z] / tau^3` under `softmax(z / tau)`; entropy rises with tau. `top` is centred (its max is 0), so
    `E[z^2] - E[z]^2` does not cancel large logits; each expectation is a batched dot product."""
    z = top
    log_p = F.log_softmax(z / tau.unsqueeze(-1), dim=-1)
    p = log_p.exp().unsqueeze(-2)  # (..., 1, K)
    entropy, mean, square = (-(p @ x.unsqueeze(-1)).squeeze(-1).squeeze(-1) for x in (log_p, -z, -z * z))
    return entropy, (square - mean * mean) / tau**3


def _newton_tau(top, target, tau_min, tau_max, h_min, h_max) -> torch.Tensor:
    """The tau in `[tau_min, tau_max]` with `H(tau) = target`, where `H` rises from `h_min` to `h_max` (rows whose
    root lies outside are clamped by the caller). Newton's steps, kept inside a bracket that shrinks around the root;
    a step that would leave it bisects instead. A fixed number of steps: no host synchronisation."""
    lo, hi = torch.full_like(target, tau_min), torch.full_like(target, tau_max)
    rise = (h_max - h_min).clamp(min=torch.finfo(top.dtype).tiny)
    tau = (lo + (target - h_min) / rise * (hi - lo)).clamp(tau_min, tau_max)  # regula falsi from the two ends
    for _ in range(newton_iterations(tau_min, tau_max)):
        entropy, slope = _entropy_and_slope(top, tau)
        below = entropy < target  # the root lies at a larger tau
        lo, hi = torch.where(below, tau, lo), torch.where(below, hi, tau)
        step = tau - (entropy - target) / slope.clamp(min=torch.finfo(top.dtype).tiny)
        inside = (step >= lo) & (step <= hi)  # at the root, the step stays on the end it just set
        tau = torch.where(inside, step, (lo + hi) / 2)
    return tau


def _bisection_tau(top, target, tau_min, tau_max, num_iterations) -> torch.Tensor:
    """The authors' solve: `num_iterations` bisection steps on tau."""
    lo = torch.full_like(target, tau_min)
    hi = torch.full_like(target, tau_max)
    for _ in range(num_iterations):
        mid = (lo + hi) / 2
        below = entropy_from_logits(top / mid.unsqueeze(-1)) < target
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return (lo + hi) / 2


def teacher_gold_logprobs(
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    rule: TemperatureRule = PAPER_RULE,
    *,
    fixed_tau: float | None = None,
    scratch_numel: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher side of the loss: `(..., V), (...) -> (q (...), tau (...), teacher entropy (...))` float32, no gradient.

    `q = log softmax(z / tau)[y]` over the full vocabulary, with tau from `rule` (`entropy_guided_temperature`), or
    the constant `fixed_tau` instead where given (the fixed-temperature ablation); the entropy is the full-vocabulary
    one, at temperature 1. Labels equal to -100 read token 0 (mask them after).

    One `topk` over the logits (which also gives each row's max), then one sweep over the vocabulary, `scratch_numel`
    logits at a time (whole rows, at least one; default `SCRATCH_NUMEL` on the CPU, every row at once on a GPU; 0:
    every row at once in fresh tensors, the form `compiled_teacher_gold_logprobs` fuses):
    `x = z - max` and `e = exp(x)` give `S = sum e` and the entropy `log S - sum(e * x) / S`, then
    `q = (z_y - max) / tau - log sum exp(x / tau)`. The two `(rows, V)` float32 scratch buffers are the only
    full-vocabulary memory besides the logits, which stay in their own dtype.
    """
    with torch.no_grad():
        logits = teacher_logits.detach()
        shape, vocab = logits.shape[:-1], logits.size(-1)
        z = logits.reshape(-1, vocab)  # (N, V)
        if fixed_tau is None:
            top = z.topk(min(rule.temperature_top_k, vocab), dim=-1).values  # (N, K), the max first
            peak = top[:, 0].float()
            solved = solve_temperature(top, rule)  # (N,) before the low-entropy rule
        else:
            peak = z.amax(dim=-1).float()  # no top-k: the temperature is known
        gold = z.gather(-1, labels.reshape(-1, 1).clamp(min=0)).squeeze(-1).float() - peak  # (N,), <= 0
        q, tau, entropy = (torch.empty_like(peak) for _ in range(3))
        if scratch_numel is None:
            scratch_numel = SCRATCH_NUMEL if z.device.type == "cpu" else z.numel()
        if scratch_numel == 0:  # one block in fresh tensors, no Python loop: what `torch.compile` fuses
            x = z.float() - peak[:, None]
            return _sweep(x, x.exp(), gold, peak, solved if fixed_tau is None else None, rule, fixed_tau, shape)
        rows = max(1, scratch_numel // vocab)
        # Allocated once and reused: fresh (rows, V) buffers per block would be returned to and taken from the
        # allocator on every block (on the CPU, large ones are new pages each time)
        shifted = peak.new_empty(min(rows, len(peak)), vocab)
        weights = torch.empty_like(shifted)
        for start in range(0, len(peak), rows):
            n = min(rows, len(peak) - start)
            block = slice(start, start + n)
            x = torch.sub(z[block], peak[block, None], out=shifted[:n])  # (n, V) float32, <= 0
            e = torch.exp(x, out=weights[:n])
            total = e.sum(-1)  # >= 1: the max contributes exp(0)
            # In place rather than a batched dot product: no third buffer, and no bmm of (n, 1, V) by (n, V, 1)
            entropy[block] = total.log() - e.mul_(x).sum(-1) / total
            if fixed_tau is None:
                tau[block] = torch.where(entropy[block] <= rule.low_entropy_threshold, rule.tau_min, solved[block])
            else:
                tau[block] = fixed_tau
            # The max of z / tau is max / tau, so x / tau is already shifted for a stable logsumexp
            q[block] = gold[block] / tau[block] - x.div_(tau[block, None]).exp_().sum(-1).log()
        return q.reshape(shape), tau.reshape(shape), entropy.reshape(shape)


def _sweep(x, e, gold, peak, solved, rule, fixed_tau, shape):
    """The block loop's body of `teacher_gold_logprobs` over all rows at once, without scratch buffers."""
    total = e.sum(-1)
    entropy = total.log() - (e * x).sum(-1) / total
    if fixed_tau is None:
        tau = torch.where(entropy <= rule.low_entropy_threshold, rule.tau_min, solved)
    else:
        tau = torch.full_like(peak, fixed_tau)
    q = gold / tau - (x / tau[:, None]).exp().sum(-1).log()
    return q.reshape(shape), tau.reshape(shape), entropy.reshape(shape)


def _fused_teacher_gold_logprobs(teacher_logits, labels, rule=PAPER_RULE, *, fixed_tau=None):
    return teacher_gold_logprobs(teacher_logits, labels, rule, fixed_tau=fixed_tau, scratch_numel=0)


@functools.cache
def compiled_teacher_gold_logprobs() -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`teacher_gold_logprobs(logits, labels, rule, *, fixed_tau)` through `torch.compile` (compiled on first call,
    once per process), over all rows at once: the top-k, the solve and the sweep fused into a few kernels. The token
    count is marked dynamic, so that each micro-batch's own count does not recompile; the vocabulary stays static
    (`dynamic=True` made it a symbol too, which inductor on torch 2.11 CUDA could not split: `CantSplit`)."""
    compiled = torch.compile(_fused_teacher_gold_logprobs)

    def call(teacher_logits, labels, rule=PAPER_RULE, *, fixed_tau=None):
        torch._dynamo.mark_dynamic(teacher_logits, 0)
        torch._dynamo.mark_dynamic(labels, 0)
        return compiled(teacher_logits, labels, rule, fixed_tau=fixed_tau)

    return call


def plan_teacher_chunks(tokens: int, vocab: int, budget_bytes: float) -> int:
    """Tokens per teacher chunk: all `tokens` at once where their `(tokens, vocab)` buffers (`CHUNK_BYTES_PER_LOGIT`
    bytes a logit) fit in `budget_bytes`, else the fewest chunks that fit, of equal size (the last may be smaller);
    at least one token per chunk."""
    fits = max(1, int(budget_bytes // (vocab * CHUNK_BYTES_PER_LOGIT)))
    chunks = max(1, -(-tokens // fits))
    return max(1, -(-tokens // chunks))


def curiosft_loss_from_logprobs(
    student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor, kd_coef: float = KD_COEF
) -> tuple[torch.Tensor, torch.Tensor]:
    """`L = -l + kd_coef * 0.5 * (l - q)^2` elementwise -> `(per-token loss, distillation term)`, same shape.

    The distillation term is the "k2" estimate of KL on the gold token only, not a full-vocabulary KL.
    """
    distill = 0.5 * (student_logprobs - teacher_logprobs.detach()) ** 2
    return -student_logprobs + kd_coef * distill, distill


def curiosft_per_token_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    kd_coef: float = KD_COEF,
    rule: TemperatureRule = PAPER_RULE,
    fixed_tau: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CurioSFT per-token loss: `(..., V), (..., V), (...) -> (per_token_loss (...), tau (...))`.

    The teacher's temperature follows `rule`, or is `fixed_tau` where given. Positions whose label is -100 get a
    zero loss. Gradient flows into `student_logits` only.
    """
    mask = labels != IGNORE_INDEX
    log_p = F.log_softmax(student_logits.float(), dim=-1)
    l = log_p.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    q, tau, _ = teacher_gold_logprobs(teacher_logits, labels, rule, fixed_tau=fixed_tau)
    loss, _ = curiosft_loss_from_logprobs(l, q, kd_coef)
    return loss * mask, tau


def entropy_regularized_loss(
    student_logprobs: torch.Tensor, student_entropy: torch.Tensor, mask: torch.Tensor, entropy_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """SFT + entropy bonus on every loss token: `L = -l - entropy_coef * H * mask` elementwise -> `(per-token loss,
    bonus mask)`, same shape; a positive coef *raises* entropy (minimising -H)."""
    return -student_logprobs - entropy_coef * (student_entropy * mask), mask


def top_entropy_regularized_loss(
    student_logprobs: torch.Tensor, student_entropy: torch.Tensor, mask: torch.Tensor, entropy_coef: float,
    entropy_top_ratio: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`entropy_regularized_loss` with the bonus on the top-`entropy_top_ratio` loss tokens by entropy only."""
    return entropy_regularized_loss(student_logprobs, student_entropy,
                                    top_entropy_mask(student_entropy, mask, entropy_top_ratio), entropy_coef)


def top_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """Boolean mask of the top-`ratio` fraction of the valid (`mask`) positions by entropy (at least one)."""
    valid = entropy.detach()[mask]
    if valid.numel() == 0:
        return torch.zeros_like(mask)
    k = max(1, int(round(ratio * valid.numel())))
    threshold = valid.topk(k).values[-1]
    return mask & (entropy.detach() >= threshold)


# ---- the registry of `sft_loss` values ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SFTLoss:
    """One value of `sft_loss`: what it trains with, and what `CurioSFTTrainer` keeps and runs for it.

    `per_token` is elementwise over the `(B, T)` response tokens, with the config `fields` passed as keywords of the
    same names: `(l, q, **fields) -> (loss, distillation term)` where `distils` (`q` the teacher's tempered gold
    log-prob), else `(l, entropy, mask, **fields) -> (loss, entropy-bonus mask)`; None for TRL's own losses.
    """

    name: str
    description: str  # one line of the `sft_loss` help
    trl_native: bool = False  # run by `SFTTrainer.compute_loss` unchanged, selected through TRL's own fields
    distils: bool = False  # the distillation term toward a teacher's gold log-prob at temperature tau
    needs_teacher: bool = False  # the teacher is a separate frozen copy, synced and checkpointed (else the live model)
    fixed_tau: bool = False  # the teacher at the one temperature `fixed_tau` instead of the entropy-guided rule
    per_token: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
    fields: tuple[str, ...] = ()


LOSSES: dict[str, SFTLoss] = {loss.name: loss for loss in (
    SFTLoss("nll", "TRL's negative log-likelihood (vanilla SFT)", trl_native=True),
    SFTLoss("dft", "TRL's DFT: NLL weighted by the detached gold-token probability", trl_native=True),
    SFTLoss("label_smoothing", "TRL's NLL with `label_smoothing_factor` (0.1 unless set)", trl_native=True),
    SFTLoss("entropy_reg", "NLL - entropy_coef * token entropy (a positive coef raises entropy)",
            per_token=entropy_regularized_loss, fields=("entropy_coef",)),
    SFTLoss("top_entropy_reg",
            "like entropy_reg, with the bonus only on the top `entropy_top_ratio` highest-entropy tokens",
            per_token=top_entropy_regularized_loss, fields=("entropy_coef", "entropy_top_ratio")),
    SFTLoss("curiosft", "CurioSFT: self-distillation toward a synced teacher at an entropy-guided temperature",
            distils=True, needs_teacher=True, per_token=curiosft_loss_from_logprobs, fields=("kd_coef",)),
    SFTLoss("curiosft_fixed_tau", "CurioSFT ablation: one teacher temperature `fixed_tau` everywhere",
            distils=True, needs_teacher=True, fixed_tau=True, per_token=curiosft_loss_from_logprobs,
            fields=("kd_coef",)),
    SFTLoss("curiosft_live_teacher", "CurioSFT ablation: the live model (stop-gradient) is the teacher; no copy kept",
            distils=True, per_token=curiosft_loss_from_logprobs, fields=("kd_coef",)),
)}
