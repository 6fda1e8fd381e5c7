"""The CurioSFT rule (spec, "The loss") against an independent float64 evaluation, and its properties."""

import dataclasses
import inspect
import math

import numpy as np
import pytest
import torch

from curiosft_trl.sft.losses import (
    CHUNK_BYTES_PER_LOGIT,
    LOSSES,
    TemperatureRule,
    compiled_teacher_gold_logprobs,
    curiosft_loss_from_logprobs,
    curiosft_per_token_loss,
    entropy_guided_temperature,
    plan_teacher_chunks,
    teacher_gold_logprobs,
    top_entropy_mask,
)

# The spec's constants ("The loss"), under the names of `TemperatureRule` and the config
SPEC = dict(tau_min=1.1, tau_max=1.5, temperature_top_k=512, entropy_pivot=1.2, entropy_slope=2.0,
            max_entropy_increment=0.5, num_bisection_iterations=20, low_entropy_threshold=0.03)


def _entropy64(z: np.ndarray) -> float:
    z = z - z.max()
    p = np.exp(z) / np.exp(z).sum()
    nz = p > 0
    return float(-(p[nz] * np.log(p[nz])).sum())


def reference_tau(z: np.ndarray, s=SPEC) -> float:
    """The spec, one row at a time, in float64."""
    z = z.astype(np.float64)
    top = np.sort(z)[::-1][: s["temperature_top_k"]]
    h = _entropy64(top)
    target = h + s["max_entropy_increment"] / (1 + math.exp(-s["entropy_slope"] * (h - s["entropy_pivot"])))
    if _entropy64(z) <= s["low_entropy_threshold"]:
        return s["tau_min"]
    if _entropy64(top / s["tau_min"]) >= target:
        return s["tau_min"]
    if _entropy64(top / s["tau_max"]) <= target:
        return s["tau_max"]
    lo, hi = s["tau_min"], s["tau_max"]
    for _ in range(60):  # to machine precision: the exact root
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _entropy64(top / mid) < target else (lo, mid)
    return (lo + hi) / 2


def reference_loss(zs: np.ndarray, zt: np.ndarray, y: int, kd=1.0) -> tuple[float, float]:
    tau = reference_tau(zt)
    ls = zs.astype(np.float64) - zs.max()
    l = ls[y] - math.log(np.exp(ls).sum())
    qt = zt.astype(np.float64) / tau
    qt = qt - qt.max()
    q = qt[y] - math.log(np.exp(qt).sum())
    return -l + kd * 0.5 * (l - q) ** 2, tau


def _logits(shape, scale, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).float()


@pytest.mark.parametrize("solver", ["newton", "bisection"])
@pytest.mark.parametrize("vocab", [7, 300, 512, 2000])
@pytest.mark.parametrize("scale", [0.01, 0.5, 2.0, 8.0, 40.0])
def test_tau_matches_float64_reference(vocab, scale, solver):
    z = _logits((3, 4, vocab), scale, seed=vocab + int(scale * 10))
    tau = entropy_guided_temperature(z, TemperatureRule(temperature_solver=solver))
    assert tau.shape == (3, 4) and tau.dtype == torch.float32
    ref = np.array([reference_tau(row) for row in z.reshape(-1, vocab).numpy()]).reshape(3, 4)
    np.testing.assert_allclose(tau.numpy(), ref, rtol=1e-5)


@pytest.mark.parametrize("vocab", [5, 700])
@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0])
def test_loss_matches_float64_reference(vocab, scale):
    zs, zt = _logits((2, 3, vocab), scale, 1), _logits((2, 3, vocab), scale, 2)
    y = torch.randint(0, vocab, (2, 3), generator=torch.Generator().manual_seed(3))
    loss, tau = curiosft_per_token_loss(zs, zt, y)
    for idx in np.ndindex(2, 3):
        ref_loss, ref_tau = reference_loss(zs[idx].numpy(), zt[idx].numpy(), int(y[idx]))
        assert loss[idx].item() == pytest.approx(ref_loss, rel=1e-5, abs=1e-6)
        assert tau[idx].item() == pytest.approx(ref_tau, rel=1e-5)


def test_tau_within_bounds_and_both_ends_reached():
    z = torch.cat([_logits((200, 1000), s, i) for i, s in enumerate([0.05, 1.0, 3.0, 10.0])])
    tau = entropy_guided_temperature(z)
    assert (tau >= 1.1).all() and (tau <= 1.5).all()
    assert (tau == 1.5).any(), "a target out of reach clamps to tau_max"
    assert ((tau > 1.1) & (tau < 1.5)).any(), "interior roots exist"


def test_tau_is_tau_min_where_full_entropy_below_threshold():
    z = torch.zeros(4, 600)
    z[:, 3] = 30.0  # full entropy ~ 600 * e^-30 * 30: far below 0.03
    z[2:, :] = torch.randn(2, 600)  # two flat rows, for contrast
    tau = entropy_guided_temperature(z)
    assert tau[:2].tolist() == [pytest.approx(1.1), pytest.approx(1.1)]
    assert (tau[2:] > 1.1).all()


@pytest.mark.parametrize("solver", ["newton", "bisection"])
def test_custom_constants_are_honoured(solver):
    z = _logits((50, 300), 2.0, 7)
    rule = TemperatureRule(tau_min=0.5, tau_max=3.0, temperature_top_k=20, num_bisection_iterations=30,
                           temperature_solver=solver)
    tau = entropy_guided_temperature(z, rule)
    ref = [reference_tau(r, {**SPEC, "tau_min": 0.5, "tau_max": 3.0, "temperature_top_k": 20}) for r in z.numpy()]
    np.testing.assert_allclose(tau.numpy(), ref, rtol=1e-5)


@pytest.mark.parametrize("bounds", [dict(tau_min=1.1, tau_max=1.5, temperature_top_k=512),
                                    dict(tau_min=0.5, tau_max=3.0, temperature_top_k=20),
                                    # the dose-response study's widest bracket (recipes/tiny/study_dose_response.yaml)
                                    dict(tau_min=1.1, tau_max=5.0, temperature_top_k=512)])
def test_the_newton_solve_reaches_the_root_on_every_kind_of_row(bounds):
    # Gaussian and heavy-tailed (Gumbel) rows from near-uniform to near-one-hot: Newton's fixed number of steps lands
    # on the exact root (float32 output), where the authors' 20-step bisection is within its 0.4 / 2^21 interval
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(20, 1500, generator=g) * s for s in (0.01, 0.1, 0.5, 1, 2, 3, 5, 8, 15)]
                  + [torch.distributions.Gumbel(0.0, s).sample((20, 1500)) for s in (0.3, 1.0, 3.0)])
    ref = np.array([reference_tau(row, {**SPEC, **bounds}) for row in z.numpy()])
    newton = entropy_guided_temperature(z, TemperatureRule(**bounds)).numpy()
    assert np.abs(newton - ref).max() <= 2e-7 * bounds["tau_max"]
    assert ((newton > bounds["tau_min"]) & (newton < bounds["tau_max"])).sum() > 50  # interior roots were solved


def test_an_unknown_solver_is_an_error():
    with pytest.raises(ValueError, match="solver: unknown value `brent`"):
        TemperatureRule(temperature_solver="brent")


def test_tau_min_above_tau_max_is_an_error():
    with pytest.raises(ValueError, match="tau_min"):
        TemperatureRule(tau_min=1.6, tau_max=1.5)


def test_the_rules_defaults_are_the_papers_constants():
    assert TemperatureRule() == TemperatureRule(**SPEC)


def test_gradient_wrt_student_logprob_is_reweighted_nll():
    l = torch.log(torch.rand(100, dtype=torch.float64)).requires_grad_()
    q = torch.log(torch.rand(100, dtype=torch.float64))
    loss, _ = curiosft_loss_from_logprobs(l, q)
    loss.sum().backward()
    torch.testing.assert_close(l.grad, -(1 - (l.detach() - q)))


def test_learning_stops_once_student_exceeds_e_times_teacher():
    q = torch.tensor([-2.0], dtype=torch.float64)
    l = (q + 1.0).requires_grad_()  # pi = e * q_tau
    curiosft_loss_from_logprobs(l, q)[0].sum().backward()
    assert l.grad.abs().item() < 1e-12


def test_ignored_positions_have_zero_loss_and_no_gradient():
    zs = _logits((2, 5, 30), 1.0, 0).requires_grad_()
    y = torch.tensor([[1, 2, -100, 4, -100], [-100, -100, 3, 3, 3]])
    loss, _ = curiosft_per_token_loss(zs, _logits((2, 5, 30), 1.0, 1), y)
    assert (loss[y == -100] == 0).all() and (loss[y != -100] != 0).all()
    loss.sum().backward()
    assert (zs.grad[y == -100] == 0).all()


def test_top_entropy_mask_selects_the_highest_ratio():
    entropy = torch.arange(10.0).reshape(2, 5)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 4] = False  # the largest entropy is padding: never selected
    top = top_entropy_mask(entropy, mask, ratio=0.2)
    assert top.sum() == 2 and top[1, 3] and top[1, 2] and not top[1, 4]


def test_the_config_chooses_the_solver(tmp_path):
    from curiosft_trl.sft.config import CurioSFTConfig

    args = CurioSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert args.temperature_rule.temperature_solver == "newton"
    bisect = CurioSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", temperature_solver="bisection")
    z = _logits((20, 300), 2.0, 3)
    newton = entropy_guided_temperature(z, args.temperature_rule)
    authors = entropy_guided_temperature(z, bisect.temperature_rule)
    np.testing.assert_allclose(newton.numpy(), authors.numpy(), atol=3e-7)  # 20 bisection steps: within 0.4 / 2^21
    with pytest.raises(ValueError, match="temperature_solver: unknown value `brent`"):
        CurioSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", temperature_solver="brent")


def test_the_configs_defaults_are_the_rules_and_every_rule_field_is_a_recipe_key(tmp_path):
    from curiosft_trl.sft.config import CurioSFTConfig

    default = CurioSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert default.temperature_rule == TemperatureRule()
    changed = dict(tau_min=0.9, tau_max=2.0, temperature_top_k=64, entropy_pivot=0.7, entropy_slope=3.0,
                   max_entropy_increment=0.25, low_entropy_threshold=0.1, temperature_solver="bisection",
                   num_bisection_iterations=30)
    assert set(changed) == {f.name for f in dataclasses.fields(TemperatureRule)}
    args = CurioSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **changed)
    assert args.temperature_rule == TemperatureRule(**changed)


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_registered_loss_is_accepted_by_the_config_and_its_function_takes_its_fields(name, tmp_path):
    from curiosft_trl.sft.config import CurioSFTConfig

    loss = LOSSES[name]
    assert loss.name == name and loss.description
    assert CurioSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", sft_loss=name).loss is loss
    assert (loss.per_token is None) == loss.trl_native  # TRL runs its own losses; every other one has a function
    assert loss.distils or not (loss.needs_teacher or loss.fixed_tau)  # a teacher is kept only to distil from
    config_fields = {f.name for f in dataclasses.fields(CurioSFTConfig)}
    assert set(loss.fields) <= config_fields
    if loss.per_token is not None:  # `(l, q)` or `(l, entropy, mask)`, then the config fields by their names
        tensors = (None,) * (2 if loss.distils else 3)
        inspect.signature(loss.per_token).bind(*tensors, **dict.fromkeys(loss.fields))


# ---- the teacher head's one-pass sweep (`teacher_gold_logprobs`) against the old formulas, in float64 -------------


def reference_teacher(z: torch.Tensor, y: torch.Tensor, fixed_tau: float | None = None):
    """The formulas the sweep replaces, on `(N, V)` rows in float64: the full-vocabulary entropy from `log_softmax`,
    tau by the spec (`reference_tau`), `q = log_softmax(z / tau)[y]`; labels -100 read token 0."""
    z64 = z.double()
    log_p = z64.log_softmax(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    if fixed_tau is None:
        tau = torch.tensor([reference_tau(row) for row in z64.numpy()], dtype=torch.float64)
    else:
        tau = torch.full((len(z),), fixed_tau, dtype=torch.float64)
    q = (z64 / tau[:, None]).log_softmax(-1).gather(-1, y.clamp(min=0)[:, None]).squeeze(-1)
    return q, tau, entropy


def _rows(kind: str, n: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, vocab, generator=g)
    if kind == "nearly_uniform":
        return z * 1e-4
    if kind == "peaked":  # one token 60 nats above the rest: full entropy ~ vocab * 60 * e^-60, far below 0.03
        z[torch.arange(n), torch.randint(0, vocab, (n,), generator=g)] += 60.0
        return z
    if kind == "very_sharp":
        return z * 200.0
    if kind == "offset":  # large logits: the sweep's `z - max` must not lose the differences
        return z * 3.0 + 1000.0
    return z * {"flat": 0.5, "typical": 2.0, "sharp": 8.0}[kind]


def _assert_teacher_matches(got, want):
    (q, tau, entropy), (q_ref, tau_ref, entropy_ref) = got, want
    assert q.dtype == tau.dtype == entropy.dtype == torch.float32
    np.testing.assert_allclose(tau.numpy(), tau_ref.numpy(), rtol=1e-5)
    np.testing.assert_allclose(q.numpy(), q_ref.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(entropy.numpy(), entropy_ref.numpy(), rtol=1e-5, atol=1e-6)


KINDS = ["nearly_uniform", "flat", "typical", "sharp", "very_sharp", "peaked", "offset"]


@pytest.mark.parametrize("vocab", [7, 600, 3000])
@pytest.mark.parametrize("kind", KINDS)
def test_the_teacher_sweep_equals_the_old_formulas(kind, vocab):
    z = _rows(kind, 10, vocab, seed=vocab)
    y = torch.randint(0, vocab, (10,), generator=torch.Generator().manual_seed(1))
    want = reference_teacher(z, y)
    # one block, blocks of 3 rows (the last one ragged), a row at a time (scratch smaller than a row)
    for scratch in (2**22, 3 * vocab + 1, 1):
        _assert_teacher_matches(teacher_gold_logprobs(z, y, scratch_numel=scratch), want)
    assert torch.equal(teacher_gold_logprobs(z, y)[1], entropy_guided_temperature(z))  # one rule, two paths


@pytest.mark.parametrize("kind", ["nearly_uniform", "typical", "peaked"])
def test_the_teacher_sweep_on_a_real_vocabulary_size(kind):
    # 151,936 columns (Qwen2.5): float32 sums over the whole vocabulary stay within the tolerance
    z = _rows(kind, 4, 151_936, seed=5)
    y = torch.randint(0, 151_936, (4,), generator=torch.Generator().manual_seed(2))
    _assert_teacher_matches(teacher_gold_logprobs(z, y, scratch_numel=151_936 * 3), reference_teacher(z, y))


def test_the_teacher_sweep_with_a_fixed_tau_equals_the_old_formulas():
    z = torch.cat([_rows(kind, 3, 800, seed=i) for i, kind in enumerate(KINDS)])
    y = torch.randint(0, 800, (len(z),), generator=torch.Generator().manual_seed(3))
    for scratch in (2**22, 2 * 800):
        _assert_teacher_matches(teacher_gold_logprobs(z, y, fixed_tau=1.3, scratch_numel=scratch),
                                reference_teacher(z, y, fixed_tau=1.3))


def test_the_teacher_sweep_keeps_shapes_and_reads_padding_as_token_zero():
    z = _logits((2, 5, 700), 2.0, 4)
    y = torch.tensor([[1, 2, -100, 4, -100], [-100, -100, 3, 699, 0]])
    q, tau, entropy = teacher_gold_logprobs(z, y, scratch_numel=700 * 4)
    assert q.shape == tau.shape == entropy.shape == (2, 5)
    _assert_teacher_matches((q.reshape(-1), tau.reshape(-1), entropy.reshape(-1)),
                            reference_teacher(z.reshape(-1, 700), y.reshape(-1)))
    unpadded = teacher_gold_logprobs(z, y.clamp(min=0), scratch_numel=700 * 4)
    assert all(torch.equal(a, b) for a, b in zip((q, tau, entropy), unpadded))


def test_the_teacher_sweep_reads_bf16_logits_as_they_are():
    # An autocast head gives bf16 logits; the sweep upcasts one block at a time, with the same result as upcasting all
    z = _rows("typical", 12, 1000, seed=6).bfloat16()
    y = torch.randint(0, 1000, (12,), generator=torch.Generator().manual_seed(4))
    _assert_teacher_matches(teacher_gold_logprobs(z, y, scratch_numel=5000), reference_teacher(z.float(), y))


def test_the_teacher_sweep_sets_tau_min_where_the_full_entropy_is_low():
    z = _rows("peaked", 6, 2000, seed=7)
    z[3:] = _rows("typical", 3, 2000, seed=8)
    _, tau, entropy = teacher_gold_logprobs(z, torch.zeros(6, dtype=torch.long), scratch_numel=2 * 2000)
    assert (entropy[:3] <= 0.03).all() and torch.equal(tau[:3], torch.full((3,), 1.1)) and (tau[3:] > 1.1).all()


def test_the_teacher_sweep_on_no_tokens():
    q, tau, entropy = teacher_gold_logprobs(torch.zeros(0, 50), torch.zeros(0, dtype=torch.long))
    assert q.shape == tau.shape == entropy.shape == (0,)


# ---- the teacher side's chunks and its compiled form --------------------------------------------------------------


@pytest.mark.parametrize("fixed_tau", [None, 1.3])
def test_the_teacher_sweep_in_one_block_without_scratch_buffers_equals_the_blocked_one(fixed_tau):
    z = _rows("typical", 40, 3000, seed=9).bfloat16()
    y = torch.randint(0, 3000, (40,), generator=torch.Generator().manual_seed(5))
    for got, want in zip(teacher_gold_logprobs(z, y, fixed_tau=fixed_tau, scratch_numel=0),
                         teacher_gold_logprobs(z, y, fixed_tau=fixed_tau, scratch_numel=3000 * 7), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_the_chunk_plan_is_one_chunk_where_the_budget_allows_and_equal_chunks_where_not():
    vocab, per_token = 151_936, 151_936 * CHUNK_BYTES_PER_LOGIT
    assert plan_teacher_chunks(2048, vocab, 2048 * per_token) == 2048  # exactly fits: one chunk
    assert plan_teacher_chunks(2048, vocab, 80 * 2**30) == 2048
    assert plan_teacher_chunks(2048, vocab, 2047 * per_token) == 1024  # two equal chunks, not 2047 + 1
    assert plan_teacher_chunks(2049, vocab, 1000 * per_token) == 683  # three chunks of at most 1000
    assert plan_teacher_chunks(100, vocab, 1) == 1  # at least one token per chunk
    assert plan_teacher_chunks(0, vocab, 2**30) == 1  # no tokens: any size loops zero times
    for tokens in (1, 7, 300, 2048, 5000):
        for budget in (1, 3 * per_token, 256 * per_token, 10**12):
            size = plan_teacher_chunks(tokens, vocab, budget)
            assert 1 <= size <= tokens and (size * per_token <= budget or size == 1)


def test_the_compiled_teacher_side_gives_the_eager_numbers_and_one_graph_for_every_token_count():
    # torch.compile on the CPU (inductor's C++ backend): ~25 s cold on a shared 2-core machine
    from torch._dynamo.utils import counters

    g = torch.Generator().manual_seed(0)
    graphs = []
    for n, fixed_tau in ((37, None), (53, None), (90, None), (41, 1.3)):
        z = _rows("typical", n, 3000, seed=n)
        y = torch.randint(0, 3000, (n,), generator=g)
        y[0] = -100
        got = compiled_teacher_gold_logprobs()(z, y, TemperatureRule(), fixed_tau=fixed_tau)
        for a, b in zip(got, teacher_gold_logprobs(z, y, fixed_tau=fixed_tau)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] >= 1 and graphs[2] == graphs[0], f"a new token count recompiled: {graphs}"
    assert graphs[3] <= graphs[0] + 1  # `fixed_tau` is another graph (no top-k, no solve), once
