"""The fp8 teacher (`teacher_fp8: true`, experimental, unmeasured): the frozen teacher backbone's linear layers run
their matmuls in float8 (e4m3) through `torch._scaled_mm`, with one scale per tensor.

Each `nn.Linear` of the backbone keeps its parameters as they are (the teacher sync mixes into them and checkpoints
save them, unchanged); only its `forward` is replaced. The fp8 copy of a weight is made on first use and again
whenever the weight changed: the teacher sync updates it in place, which moves the tensor's version counter. The LM
head is left at full precision: the temperature rule reads its logits.
"""

import types

import torch
import torch.nn.functional as F
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
MIN_CAPABILITY = (8, 9)  # fp8 tensor cores: Ada (8.9) and Hopper (9.0) onwards


def check_fp8_supported(loss, use_cpu: bool = False) -> None:
    """One `ValueError` where `teacher_fp8` cannot run: no teacher copy, no CUDA GPU, or one older than sm_89."""
    if not loss.needs_teacher:
        raise ValueError(f"teacher_fp8: `sft_loss: {loss.name}` has no separate teacher to quantise; use it with "
                         "`curiosft` or `curiosft_fixed_tau`.")
    if use_cpu or not torch.cuda.is_available():
        raise ValueError("teacher_fp8 needs a CUDA GPU of compute capability >= 8.9 (Ada, Hopper); this run is on "
                         "the CPU. Set teacher_fp8: false.")
    capability = torch.cuda.get_device_capability()
    if capability < MIN_CAPABILITY:
        raise ValueError(f"teacher_fp8 needs a CUDA GPU of compute capability >= 8.9 (Ada, Hopper); "
                         f"{torch.cuda.get_device_name()} is {capability[0]}.{capability[1]}. Set teacher_fp8: false.")


def quantize(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(..., K)` -> (its fp8 e4m3 values, the float32 scalar scale that multiplies them back)."""
    scale = t.detach().abs().amax().float().clamp(min=1e-12) / FP8_MAX
    return (t.detach().float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def _fp8_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`nn.Linear.forward` with the matmul in fp8: `(..., in) -> (..., out)`, in autocast's dtype where it is on."""
    weight = self.weight
    out_features, in_features = weight.shape
    if in_features % 16 or out_features % 16:  # `_scaled_mm` needs both multiples of 16
        return F.linear(x, weight, self.bias)
    stamp = (weight.data_ptr(), weight._version)
    if getattr(self, "_fp8_stamp", None) != stamp:
        self._fp8_weight, self._fp8_scale = quantize(weight)  # (out, in)
        self._fp8_stamp = stamp
    device = x.device.type
    out_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    x_fp8, x_scale = quantize(x.reshape(-1, in_features))
    # The second operand must be column-major: the (out, in) row-major weight, transposed, is
    y = torch._scaled_mm(x_fp8, self._fp8_weight.t(), scale_a=x_scale, scale_b=self._fp8_scale, out_dtype=out_dtype)
    if self.bias is not None:
        y = y + self.bias.to(out_dtype)
    return y.reshape(*x.shape[:-1], out_features)


def to_fp8_inference(model: nn.Module) -> int:
    """Switch every `nn.Linear` of `model`'s backbone (`get_decoder()`; the LM head stays) to `_fp8_forward`, in
    place; returns how many were switched. Parameters and state-dict keys are unchanged."""
    linears = [m for m in model.get_decoder().modules() if type(m) is nn.Linear]
    for module in linears:
        module.forward = types.MethodType(_fp8_forward, module)
    return len(linears)
