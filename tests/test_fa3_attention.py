"""FlashAttention-3 fp8 attention (`fa3_fp8`) on a CPU: the per-head e4m3 quantization, the call into the
library through a stand-in that reads the very memory the pointers and strides name, and every refusal.

The stand-in (`FakeLibrary`) implements what csrc/fa3_fp8.cu documents for the kernel: q8, k8, v8 read
as e4m3 [B, L, H, 128] through the given strides, descales read per (batch, head) through theirs,
S = q k^T * descale_q * descale_k * softmax_scale, P = exp(S - max) scaled by 2^8 and rounded to e4m3,
O = P v * descale_v / sum(exp(S - max)), written as bf16 into o's memory. So a wrong pointer, stride or
argument order shows here as a wrong result, and the drift it reports is what fp8 attention costs.
"""

from __future__ import annotations

import ctypes
import math
import re
from pathlib import Path

import pytest
import torch

import wan_runtime.fa3_attention as fa3
from wan_runtime.attention import REGISTRY, check_backend
from wan_runtime.errors import BackendUnavailableError
from wan_runtime.fa3_attention import ARGTYPES, HOW_TO_GET, LIBRARY_ENV, Fa3Fp8Backend, quantize_per_head
from wan_runtime.fp8 import FP8_DTYPE

ROOT = Path(__file__).resolve().parents[1]


def _view(ptr: int, dtype: torch.dtype, shape: tuple[int, ...], strides: tuple[int, ...]) -> torch.Tensor:
    """The tensor of `shape` and `strides` (elements) at address `ptr` (shares the memory)."""
    extent = 1 + sum((n - 1) * s for n, s in zip(shape, strides))
    size = extent * torch.empty((), dtype=dtype).element_size()
    raw = torch.frombuffer((ctypes.c_char * size).from_address(ptr), dtype=torch.uint8)
    return raw.view(dtype).as_strided(shape, strides)


class FakeLibrary:
    """The library's two entry points, computing the kernel's documented arithmetic in torch."""

    def __init__(self, code: int = 0) -> None:
        self.code, self.calls = code, []

    def wan_fa3_fp8_forward(self, q, k, v, o, lse, dq, dk, dv, d_batch, d_head, b, lq, lk, h, d,
                            qb, qr, qh, kb, kr, kh, vb, vr, vh, ob, or_, oh, scale, num_sm, stream):
        self.calls.append(dict(b=b, lq=lq, lk=lk, h=h, d=d, scale=scale, num_sm=num_sm, stream=stream,
                               descale_strides=(d_batch, d_head)))
        if self.code:
            return self.code
        q8 = _view(q, FP8_DTYPE, (b, lq, h, d), (qb, qr, qh, 1)).float()
        k8 = _view(k, FP8_DTYPE, (b, lk, h, d), (kb, kr, kh, 1)).float()
        v8 = _view(v, FP8_DTYPE, (b, lk, h, d), (vb, vr, vh, 1)).float()
        descale = [_view(p, torch.float32, (b, h), (d_batch, d_head))[:, None, :, None] for p in (dq, dk, dv)]
        s = torch.einsum("blhd,bmhd->bhlm", q8 * descale[0], k8 * descale[1]) * scale
        p = torch.exp(s - s.amax(-1, keepdim=True))
        p8 = (p * 256).to(FP8_DTYPE).float() / 256
        out = torch.einsum("bhlm,bmhd->blhd", p8, v8 * descale[2]) / p.sum(-1).transpose(1, 2)[..., None]
        _view(o, torch.bfloat16, (b, lq, h, d), (ob, or_, oh, 1)).copy_(out)
        return 0

    def wan_fa3_error_string(self, code: int) -> bytes:
        return b"an illegal memory access was encountered"


def _backend(tmp_path: Path, library: FakeLibrary | None = None, name: str = "libwan_fa3_fp8.so") -> Fa3Fp8Backend:
    path = tmp_path / name
    path.write_bytes(b"stand-in")
    return Fa3Fp8Backend(path, loader=lambda _path: library or FakeLibrary())


def _qkv(b=1, lq=96, lk=80, h=2, d=128, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n, h, d, generator=gen, dtype=torch.bfloat16) for n in (lq, lk, lk))


def _exact(q, k, v):
    q, k, v = (t.float().transpose(1, 2) for t in (q, k, v))
    return torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


# --------------------------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------------------------

def test_each_head_gets_its_own_power_of_two_scale():
    x = torch.randn(2, 64, 3, 128, dtype=torch.bfloat16)
    x[:, :, 1] *= 1000  # one loud head must not cost the others their range
    x8, descale = quantize_per_head(x)
    assert x8.dtype == FP8_DTYPE and x8.is_contiguous() and descale.shape == (2, 3)
    assert torch.equal(torch.exp2(torch.round(torch.log2(descale))), descale)  # powers of two
    assert descale[0, 1] > 100 * descale[0, 0]


def test_quantized_values_are_within_e4m3_rounding_of_the_input():
    x = torch.randn(1, 256, 2, 128, dtype=torch.bfloat16)
    x8, descale = quantize_per_head(x)
    back = x8.float() * descale[:, None, :, None]
    assert torch.all((back - x.float()).abs() <= 2.0 ** -4 * x.float().abs() + 1e-3)


# --------------------------------------------------------------------------------------------
# The call into the library
# --------------------------------------------------------------------------------------------

def test_fp8_attention_matches_exact_attention_within_four_e4m3_roundings(tmp_path):
    q, k, v = _qkv()
    out = _backend(tmp_path).bind(torch.device("cpu"))(q, k, v)
    assert out.shape == q.shape and out.dtype == torch.bfloat16
    assert 0.01 < _rel(out, _exact(q, k, v)) < 0.08  # ~0.05 measured on the H200 (bench/fp8_attention_check.py)


def test_the_library_gets_the_shape_the_softmax_scale_and_per_head_descales(tmp_path):
    library = FakeLibrary()
    q, k, v = _qkv(b=2, lq=40, lk=24, h=3)
    _backend(tmp_path, library).bind(torch.device("cpu"))(q, k, v)
    call = library.calls[-1]
    assert (call["b"], call["lq"], call["lk"], call["h"], call["d"]) == (2, 40, 24, 3, 128)
    assert call["scale"] == pytest.approx(1 / math.sqrt(128))
    assert call["descale_strides"] == (3, 1)  # one descale per (batch, head) of a [B, H] tensor
    assert (call["num_sm"], call["stream"]) == (1, 0)  # off CUDA


def test_a_shared_key_offset_does_not_cost_precision(tmp_path):
    q, k, v = _qkv(seed=1)
    fn = _backend(tmp_path).bind(torch.device("cpu"))
    reference = _exact(q, k, v)
    shifted = fn(q, k + 20.0, v)  # softmax ignores it; without smoothing it would eat e4m3's range
    assert _rel(shifted, reference) < 0.08


def test_a_kernel_error_is_one_line_naming_the_shape_and_cudas_reason(tmp_path):
    fn = _backend(tmp_path, FakeLibrary(code=700)).bind(torch.device("cpu"))
    with pytest.raises(BackendUnavailableError, match=r"\[1, 96, 80, 2, 128\].*illegal memory access.*700"):
        fn(*_qkv())


def test_a_head_dim_other_than_128_is_refused_naming_the_fix(tmp_path):
    fn = _backend(tmp_path).bind(torch.device("cpu"))
    with pytest.raises(BackendUnavailableError, match="use 'cudnn'"):
        fn(*_qkv(d=64))


def test_inside_a_compiled_function_the_kernel_is_one_opaque_op(tmp_path):
    q, k, v = _qkv(lq=32, lk=32)
    fn = _backend(tmp_path).bind(torch.device("cpu"))
    compiled = torch.compile(lambda q, k, v: fn(q, k, v) + 1, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), fn(q, k, v) + 1)


def test_the_python_argument_types_match_the_c_entry_point():
    source = (ROOT / "csrc" / "fa3_fp8.cu").read_text()
    params = re.search(r"int wan_fa3_fp8_forward\((.*?)\)\s*\{", source, re.S).group(1)
    c_types = {"void*": ctypes.c_void_p, "float*": ctypes.c_void_p, "long long": ctypes.c_longlong,
               "int": ctypes.c_int, "float": ctypes.c_float}
    declared = []
    for param in params.split(","):
        words = param.split()
        kind = " ".join(words[:-1]).replace(" *", "*")
        declared.append(c_types[kind])
    assert declared == ARGTYPES


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------

def test_without_the_library_the_reason_names_the_build_script(monkeypatch):
    monkeypatch.delenv(LIBRARY_ENV, raising=False)
    reason = Fa3Fp8Backend().library_reason()
    assert reason == HOW_TO_GET and "bench/fa3_build.sh" in reason and LIBRARY_ENV in reason


def test_a_library_path_that_is_not_a_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(LIBRARY_ENV, str(tmp_path / "missing.so"))
    assert "missing.so is not a file" in Fa3Fp8Backend().library_reason()


def test_a_library_that_cannot_be_loaded_says_so_and_how_to_rebuild(tmp_path):
    path = tmp_path / "broken.so"
    path.write_bytes(b"not an ELF file")
    reason = Fa3Fp8Backend(path).library_reason()  # the real loader: ctypes refuses the file
    assert "cannot load" in reason and "bench/fa3_build.sh" in reason


def test_fa3_fp8_on_a_cpu_device_needs_cuda():
    with pytest.raises(BackendUnavailableError, match="needs a CUDA device"):
        check_backend("fa3_fp8", "cpu")


@pytest.mark.parametrize("capability", [(8, 9), (10, 0)])
def test_a_gpu_other_than_hopper_is_refused_with_its_capability(monkeypatch, capability):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    reason = REGISTRY["fa3_fp8"].unavailable_reason(torch.device("cuda", 0))
    assert f"this GPU is {capability[0]}.{capability[1]}" in reason and "Hopper" in reason


def test_the_registry_holds_one_fa3_backend_that_loads_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "from-env.so"
    monkeypatch.setenv(LIBRARY_ENV, str(path))
    assert REGISTRY["fa3_fp8"].library_path() == path
    assert isinstance(REGISTRY["fa3_fp8"], fa3.Fa3Fp8Backend)


def test_the_kernel_op_refuses_inputs_that_are_not_quantized(tmp_path):
    backend = _backend(tmp_path)
    backend.library()
    q, k, v = _qkv()
    descale = torch.ones(1, 2)
    with pytest.raises(BackendUnavailableError, match="takes e4m3 q8, k8, v8"):
        fa3.fa3_fp8_kernel(str(backend.library_path()), q, k, v, descale, descale, descale)


def test_the_kernel_op_refuses_descales_that_are_not_one_per_batch_and_head(tmp_path):
    backend = _backend(tmp_path)
    backend.library()
    q8, descale = quantize_per_head(next(_qkv(b=2, h=2)))
    with pytest.raises(BackendUnavailableError, match=r"contiguous fp32 \[B, H\] descales"):
        fa3.fa3_fp8_kernel(str(backend.library_path()), q8, q8, q8, descale, descale, descale.t())
