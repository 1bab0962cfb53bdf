"""The attention backend switch: results, availability, and the errors for missing backends."""

from __future__ import annotations

import importlib
import sys
import types

import pytest
import torch

from wan_runtime.attention import (
    BACKENDS, REGISTRY, PackageBackend, attention, available_backends, check_backend, resolve_attention, resolve_ops,
)
from wan_runtime.errors import BackendUnavailableError, ConfigError


def _qkv(lq: int = 10, lk: int = 7, b: int = 2, h: int = 3, d: int = 16, device: str = "cpu",
         dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(b, lq, h, d, generator=gen)
    k = torch.randn(b, lk, h, d, generator=gen)
    v = torch.randn(b, lk, h, d, generator=gen)
    return tuple(u.to(device=device, dtype=dtype) for u in (q, k, v))


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v written out, in [B, L, H, D] layout."""
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v)


def test_math_backend_matches_written_out_softmax_attention():
    q, k, v = _qkv()
    out = attention(q, k, v, backend="math")
    assert out.shape == (2, 10, 3, 16)  # [B, Lq, H, D]
    torch.testing.assert_close(out, _reference(q, k, v), atol=1e-5, rtol=1e-5)


def test_math_and_auto_agree_on_cpu():
    q, k, v = _qkv()
    torch.testing.assert_close(attention(q, k, v, "auto"), attention(q, k, v, "math"), atol=1e-5, rtol=1e-5)


def test_key_padding_mask_equals_dropping_the_masked_keys():
    q, k, v = _qkv(b=1)
    keep = torch.tensor([[True] * 4 + [False] * 3])
    masked = attention(q, k, v, "math", key_padding_mask=keep)
    torch.testing.assert_close(masked, _reference(q, k[:, :4], v[:, :4]), atol=1e-5, rtol=1e-5)


def test_cpu_offers_auto_and_math_only():
    assert available_backends(torch.device("cpu")) == ["auto", "math"]


@pytest.mark.parametrize(
    "backend, package", [("flash_attn2", "flash_attn"), ("flash_attn3", "flash_attn_interface")]
)
def test_missing_flash_attn_package_names_it_and_lists_available_backends(monkeypatch, backend, package):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` fail here, as when absent
    with pytest.raises(BackendUnavailableError) as err:
        check_backend(backend, "cpu")
    message = str(err.value)
    assert backend in message and f"{package} " in message and "no wheels on PyPI" in message
    assert "['auto', 'math']" in message


def test_flash_attn_namespace_of_flash_attention_4_alone_is_not_flash_attention_2(monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))  # only flash_attn.cute there
    with pytest.raises(BackendUnavailableError, match="FlashAttention-2.*not installed.*'flash_attn4'"):
        check_backend("flash_attn2", "cpu")


def test_missing_package_backend_raises_from_attention_call(monkeypatch):
    monkeypatch.setitem(sys.modules, "sageattention", None)
    q, k, v = _qkv()
    with pytest.raises(BackendUnavailableError, match="sageattention is not installed"):
        attention(q, k, v, backend="sage")


def test_unknown_backend_name_suggests_the_closest_one():
    with pytest.raises(ConfigError, match="did you mean 'flash_attn2'"):
        check_backend("flash_atn2", "cpu")
    q, k, v = _qkv()
    with pytest.raises(ConfigError, match="did you mean 'cudnn'"):
        attention(q, k, v, backend="cudn")


@pytest.mark.parametrize("backend", ["cudnn", "flash", "efficient"])
def test_cuda_only_sdpa_backend_on_cpu_device_errors(backend):
    with pytest.raises(BackendUnavailableError, match="needs a CUDA device"):
        check_backend(backend, "cpu")
    q, k, v = _qkv()
    with pytest.raises(BackendUnavailableError, match=f"'{backend}'.*pick one of \\['auto', 'math'\\]"):
        attention(q, k, v, backend=backend)


@pytest.mark.gpu
def test_every_available_cuda_backend_matches_math_in_bf16():
    device = torch.device("cuda")
    names = available_backends(device)
    assert {"auto", "math", "efficient"} <= set(names)
    q, k, v = _qkv(lq=300, lk=300, b=2, h=4, d=128, device="cuda", dtype=torch.bfloat16)
    reference = _reference(q.float(), k.float(), v.float())
    for name in names:
        if name in ("cudnn_fp8", "fa3_fp8"):
            continue  # fp8 attention is ~0.05 away by design; tests/test_gpu_speed.py bounds its drift
        out = attention(q, k, v, backend=name)
        assert out.shape == q.shape, name
        # bf16 inputs and outputs: a few bf16 ulps of values of size ~1
        torch.testing.assert_close(out.float(), reference, atol=2e-2, rtol=2e-2, msg=name)


def test_backend_list_is_the_documented_set():
    assert set(BACKENDS) == {"auto", "cudnn", "flash", "efficient", "math", "flash_attn2", "flash_attn3",
                             "flash_attn4", "sage", "cudnn_fp8", "fa3_fp8"}


def test_a_package_backend_imports_its_package_once_when_bound(monkeypatch):
    imports: list[str] = []
    calls: list[dict] = []
    fake = types.SimpleNamespace(sageattn=lambda q, k, v, **kw: calls.append(kw) or q.clone())
    monkeypatch.setitem(sys.modules, "sageattention", fake)
    real_import = importlib.import_module

    def counting_import(name, *args, **kwargs):
        imports.append(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", counting_import)
    fn = REGISTRY["sage"].bind(torch.device("cpu"))
    q, k, v = _qkv(dtype=torch.bfloat16, d=64)
    for _ in range(3):
        fn(q, k, v)
    assert [name for name in imports if name == "sageattention"] == ["sageattention"]
    assert calls == [{"tensor_layout": "NHD", "is_causal": False, "smooth_k": False}] * 3


def test_sage_leaves_the_keys_it_is_given_unchanged(monkeypatch):
    seen: list[torch.Tensor] = []
    fake = types.SimpleNamespace(sageattn=lambda q, k, v, **kw: seen.append(k) or q.clone())
    monkeypatch.setitem(sys.modules, "sageattention", fake)
    q, k, v = _qkv(dtype=torch.bfloat16, d=64)
    before = k.clone()
    REGISTRY["sage"].bind(torch.device("cpu"))(q, k, v)
    assert torch.equal(k, before)
    # the kernel gets the keys minus their mean over the sequence (softmax is unchanged by that shift)
    torch.testing.assert_close(seen[0], before - before.mean(dim=1, keepdim=True))


def test_a_package_backend_is_one_opaque_op_inside_a_compiled_function(monkeypatch):
    fake = types.SimpleNamespace(sageattn=lambda q, k, v, **kw: q * 2)
    monkeypatch.setitem(sys.modules, "sageattention", fake)
    fn = REGISTRY["sage"].bind(torch.device("cpu"))
    compiled = torch.compile(lambda q, k, v: fn(q, k, v) + 1, backend="aot_eager", fullgraph=True)
    q, k, v = _qkv(dtype=torch.bfloat16, d=64)
    torch.testing.assert_close(compiled(q, k, v), q * 2 + 1)


def test_flash_attn4_names_its_package_and_the_carry_script(monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_attn.cute.interface", None)
    with pytest.raises(BackendUnavailableError, match="flash-attn-4.*bench/fa4_wheels.sh"):
        check_backend("flash_attn4", "cpu")


def test_a_package_backend_refuses_a_gpu_older_than_its_kernels(monkeypatch):
    backend = PackageBackend("fake", "sys", "pip install fake", lambda module, q, k, v: q, min_capability=(9, 0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert backend.unavailable_reason(torch.device("cuda")) == (
        "it needs a GPU of compute capability 9.0 or newer, and this one is 8.6")


def test_a_package_backend_refuses_fp32_inputs_with_the_way_out():
    backend = PackageBackend("fake", "sys", "pip install fake", lambda module, q, k, v: q)
    fn = backend.bind(torch.device("cpu"))
    with pytest.raises(BackendUnavailableError, match="needs float16 or bfloat16 inputs.*torch SDPA backend"):
        fn(*_qkv())


def test_resolved_sdpa_function_matches_the_one_off_call():
    q, k, v = _qkv()
    fn = resolve_attention("math", "cpu")
    torch.testing.assert_close(fn(q, k, v), attention(q, k, v, "math"), rtol=0, atol=0)


def test_resolve_ops_pairs_self_and_cross_backends():
    ops = resolve_ops("math", "auto", "cpu")
    q, k, v = _qkv()
    torch.testing.assert_close(ops.self_attn(q, k, v), ops.cross_attn(q, k, v), atol=1e-5, rtol=1e-5)
    with pytest.raises(BackendUnavailableError, match="'cudnn'"):
        resolve_ops("math", "cudnn", "cpu")


def test_every_backend_name_of_the_load_option_is_implemented():
    from typing import get_args

    from wan_runtime.load_options import AttentionBackend

    assert get_args(AttentionBackend) == BACKENDS == tuple(REGISTRY)


def test_an_unknown_backend_name_gets_the_spec_text_with_a_suggestion():
    from wan_runtime.attention import check_backend_name
    from wan_runtime.errors import ConfigError

    with pytest.raises(ConfigError, match=r"attention='flsh': not a known value \(did you mean 'flash'\?\)"):
        check_backend_name("flsh")



def test_a_package_backend_refuses_a_head_dim_its_kernels_do_not_take():
    backend = PackageBackend("fake", "sys", "pip install fake", lambda module, q, k, v: q, head_dims=(64, 128))
    fn = backend.bind(torch.device("cpu"))
    q, k, v = _qkv(dtype=torch.bfloat16, d=48)
    with pytest.raises(BackendUnavailableError, match=r"'fake' takes head dims \[64, 128\].*is 48; pick a torch SDPA"):
        fn(q, k, v)
