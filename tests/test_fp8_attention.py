"""cuDNN fp8 attention (`cudnn_fp8`) on a CPU: the e4m3 scale arithmetic, the runner's wiring through a
stand-in cudnn-frontend that executes the graph it was given in torch, and every refusal.

The stand-in (`FakeFrontend`) implements the documented meaning of cudnn-frontend's `sdpa_fp8` node: Q, K,
V read through the dims and strides the graph declared, S = Q K^T * descale_q * descale_k * attn_scale,
P = softmax(S) rounded to e4m3 with scale_s and descaled with descale_s, O = P V * descale_v, written to
the declared O as e4m3 times scale_o. So a wrong layout, uid or scale in the runner shows here as a wrong
result, and the drift it reports is what fp8 attention itself costs (the GPU test's bound rests on it).
"""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch

import wan_runtime.attention as attention_module
from wan_runtime.attention import REGISTRY, check_backend
from wan_runtime.errors import BackendUnavailableError
from wan_runtime.fp8 import FP8_DTYPE, FP8_MAX
from wan_runtime.fp8_attention import (
    DESCALE_S, MAX_SCALE, P_SCALE, SCALE_S, CudnnFp8Attention, e4m3_scale, one_line, quantize_e4m3,
)


class GraphNotSupported(Exception):
    """The stand-in for cudnn.cudnnGraphNotSupportedError."""


class FakeTensor:
    """A graph tensor descriptor with the classic chained setters."""

    def __init__(self, uid=None, dim=None, stride=None, data_type=None):
        self.uid, self.dim, self.stride, self.data_type, self.output = uid, dim, stride, data_type, False

    def set_uid(self, uid):
        self.uid = uid
        return self

    def set_output(self, output):
        self.output = output
        return self

    def set_dim(self, dim):
        self.dim = dim
        return self

    def set_stride(self, stride):
        self.stride = stride
        return self

    def set_data_type(self, data_type):
        self.data_type = data_type
        return self


class FakeGraph:
    """cudnn.pygraph for one sdpa_fp8 node: records the build sequence, executes in torch."""

    def __init__(self, frontend: "FakeFrontend", **kwargs):
        self.frontend, self.kwargs, self.steps = frontend, kwargs, []
        frontend.graphs.append(self)

    def tensor(self, uid, dim, stride, data_type):
        return FakeTensor(uid, dim, stride, data_type)

    def sdpa_fp8(self, **kwargs):
        self.node = kwargs
        self.outputs = [FakeTensor(), None, FakeTensor(), FakeTensor()]  # O, Stats (not generated), Amax_S, Amax_O
        return self.outputs

    def _step(self, name, *args):
        self.steps.append((name, *args))
        if name == self.frontend.fail_at:
            raise GraphNotSupported(self.frontend.fail_message)

    def validate(self):
        self._step("validate")

    def build_operation_graph(self):
        self._step("build_operation_graph")

    def create_execution_plans(self, modes):
        self._step("create_execution_plans", tuple(modes))

    def check_support(self):
        self._step("check_support")

    def build_plans(self):
        self._step("build_plans")

    def get_workspace_size(self):
        return 64

    def execute(self, pack, workspace, handle=None):
        n = self.node

        def read(t):
            return pack[t.uid].as_strided(t.dim, t.stride).float()

        def scalar(t):
            return pack[t.uid].reshape(()).float()

        s = read(n["q"]) @ read(n["k"]).transpose(-1, -2) * scalar(n["descale_q"]) * scalar(n["descale_k"])
        p = torch.softmax(s * n["attn_scale"], dim=-1)
        p8 = (p * scalar(n["scale_s"])).to(FP8_DTYPE).float() * scalar(n["descale_s"])
        o = p8 @ read(n["v"]) * scalar(n["descale_v"])
        out, _, amax_s, amax_o = self.outputs
        pack[out.uid].as_strided(out.dim, out.stride).copy_((o * scalar(n["scale_o"])).to(FP8_DTYPE))
        pack[amax_s.uid].fill_(p.abs().max())
        pack[amax_o.uid].fill_(o.abs().max())
        self.frontend.executed.append(handle)


class FakeFrontend(types.ModuleType):
    """Enough of the `cudnn` module (cudnn-frontend) for the runner, on a CPU."""

    def __init__(self, version: int = 91900, fail_at: str | None = None, fail_message: str = ""):
        super().__init__("cudnn")
        self.__version__ = "1.32.0"
        self._version, self.fail_at, self.fail_message = version, fail_at, fail_message
        self.graphs: list[FakeGraph] = []
        self.handles: list[object] = []
        self.executed: list[object] = []
        self.data_type = types.SimpleNamespace(FP8_E4M3="FP8_E4M3", FLOAT="FLOAT")
        self.heur_mode = types.SimpleNamespace(A="A", FALLBACK="FALLBACK")
        self.cudnnGraphNotSupportedError = GraphNotSupported

    def backend_version(self):
        return self._version

    def backend_version_string(self):
        return f"{self._version // 10000}.{self._version // 100 % 100}.{self._version % 100}"

    def pygraph(self, **kwargs):
        return FakeGraph(self, **kwargs)

    def create_handle(self):
        self.handles.append(object())
        return self.handles[-1]

    def set_stream(self, handle, stream):
        assert handle in self.handles and stream == 0


def _qkv(b=1, lq=96, lk=80, h=2, d=128, dtype=torch.bfloat16, key_offset=0.0):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(b, lq, h, d, generator=gen)
    k = torch.randn(b, lk, h, d, generator=gen) + key_offset
    v = torch.randn(b, lk, h, d, generator=gen)
    return tuple(u.to(dtype) for u in (q, k, v))


def _exact(q, k, v):
    s = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) / math.sqrt(q.shape[-1])
    return torch.einsum("bhqk,bkhd->bqhd", s.softmax(dim=-1), v.float())


def _rel_l2(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


# --------------------------------------------------------------------------------------------
# The e4m3 scale arithmetic
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("amax", [1e-2, 0.3, 1.0, 3.5, 447.9, 448.0, 448.1, 1000.0, 2.0 ** 20, 7.0 * 2 ** -3])
def test_the_scale_is_the_largest_power_of_two_that_keeps_amax_within_e4m3(amax):
    scale = e4m3_scale(torch.tensor(amax, dtype=torch.float64)).item()
    assert math.log2(scale) == round(math.log2(scale))  # a power of two: scaling and descaling are exact
    assert amax * scale <= FP8_MAX
    assert scale == MAX_SCALE or amax * scale * 2 > FP8_MAX  # the largest such power of two


def test_the_scale_of_an_all_zero_tensor_is_finite():
    assert e4m3_scale(torch.tensor(0.0)).item() == MAX_SCALE


def test_quantized_values_are_within_half_an_e4m3_step_of_the_input():
    x = torch.randn(2, 50, 3, 128, dtype=torch.bfloat16) * 7
    q, descale = quantize_e4m3(x)
    assert q.dtype == FP8_DTYPE and q.is_contiguous() and descale.shape == (1, 1, 1, 1)
    back = q.float() * descale
    scaled = x.float() / descale
    # e4m3: 3 mantissa bits, so a normal value moves by at most 2^-4 of itself; subnormals (< 2^-6) by 2^-10
    bound = torch.maximum(scaled.abs() * 2 ** -4, torch.full_like(scaled, 2 ** -10)) * descale
    assert (back - x.float()).abs().le(bound).all()
    assert q.float().abs().max().item() <= FP8_MAX


def test_a_strided_view_is_quantized_into_a_contiguous_tensor():
    qkv = torch.randn(1, 40, 3 * 256, dtype=torch.bfloat16)
    k = qkv[..., 256:512].unflatten(-1, (2, 128))  # [B, L, H, D] view of a fused projection
    q8, descale = quantize_e4m3(k)
    assert q8.is_contiguous()
    torch.testing.assert_close(q8.float() * descale, k.float(), rtol=2 ** -4, atol=1e-3)


# --------------------------------------------------------------------------------------------
# The runner, through a stand-in cudnn-frontend
# --------------------------------------------------------------------------------------------

def test_fp8_attention_matches_exact_attention_within_the_error_of_five_e4m3_roundings():
    frontend, runner = FakeFrontend(), CudnnFp8Attention()
    q, k, v = _qkv(lq=300, lk=260)
    out = runner(frontend, q, k, v)
    assert out.shape == q.shape and out.dtype == torch.bfloat16
    drift = _rel_l2(out, _exact(q, k, v))
    # q, k, P, v and O each rounded to e4m3 (~2.7% RMS each, in quadrature): ~0.06 on N(0, 1) inputs
    assert 0.02 < drift < 0.1


def test_smoothing_the_keys_keeps_a_shared_key_offset_from_costing_precision():
    frontend, runner = FakeFrontend(), CudnnFp8Attention()
    q, k, v = _qkv(key_offset=20.0)  # every key carries the same large offset; softmax ignores it
    drift = _rel_l2(runner(frontend, q, k, v), _exact(q, k, v))
    assert drift < 0.1


def test_the_graph_is_declared_and_built_as_in_the_frontend_sample():
    frontend, runner = FakeFrontend(), CudnnFp8Attention()
    q, k, v = _qkv(b=2, lq=48, lk=32, h=3, d=64)
    runner(frontend, q, k, v)
    (graph,) = frontend.graphs
    assert graph.kwargs == {"io_data_type": "FP8_E4M3", "intermediate_data_type": "FLOAT", "compute_data_type": "FLOAT",
                            "handle": frontend.handles[0]}
    assert [step[0] for step in graph.steps] == ["validate", "build_operation_graph", "create_execution_plans",
                                                 "check_support", "build_plans"]
    assert graph.steps[2][1] == ("A", "FALLBACK")
    node = graph.node
    assert node["q"].dim == (2, 3, 48, 64) and node["q"].stride == (48 * 3 * 64, 64, 3 * 64, 1)  # [B,H,S,D] of BSHD
    assert node["k"].dim == (2, 3, 32, 64) and node["v"].stride == (32 * 3 * 64, 64, 3 * 64, 1)
    assert node["generate_stats"] is False and node["use_causal_mask"] is False
    assert node["attn_scale"] == pytest.approx(1 / 8)
    o, _, amax_s, amax_o = graph.outputs
    assert o.output and o.data_type == "FP8_E4M3" and o.dim == (2, 3, 48, 64)
    assert amax_s.output and amax_o.output  # keeps the graph on cuDNN's own engines, as in the sample


def test_one_graph_and_one_handle_serve_every_call_of_a_shape():
    frontend, runner = FakeFrontend(), CudnnFp8Attention()
    q, k, v = _qkv()
    first = runner(frontend, q, k, v)
    again = runner(frontend, q, k, v)
    runner(frontend, *_qkv(lq=64))
    assert torch.equal(first, again)
    assert len(frontend.graphs) == 2 and len(frontend.handles) == 1 and len(frontend.executed) == 3


def test_p_is_scaled_as_in_the_frontends_fp8_test_and_descaled_exactly():
    frontend, runner = FakeFrontend(), CudnnFp8Attention()
    entry = runner.graph(frontend, torch.device("cpu"), (1, 16, 16, 1, 64))
    assert entry.constants[SCALE_S].item() == P_SCALE == 64.0
    assert entry.constants[DESCALE_S].item() == 1 / 64.0
    assert entry.workspace.numel() == 64


def test_a_shape_cudnn_refuses_is_one_line_naming_the_shape_and_the_reason():
    frontend = FakeFrontend(fail_at="check_support", fail_message="head dim 96 not supported\n  at engine 7")
    with pytest.raises(BackendUnavailableError) as err:
        CudnnFp8Attention()(frontend, *_qkv(d=96))
    message = str(err.value)
    assert "\n" not in message
    assert "[1, 96, 80, 2, 96]" in message and "head dim 96 not supported" in message and "'cudnn'" in message


def test_a_frontend_error_becomes_the_backends_own_reason_in_one_line():
    error = GraphNotSupported("no engine — python or backend — proposed a plan for this graph (the backend declined: "
                              "[cudnn_frontend] Error: sdpa fp8 needs Hopper; python engines declined: sm100: ...)")
    assert one_line(error) == "[cudnn_frontend] Error: sdpa fp8 needs Hopper"
    assert one_line(RuntimeError("")) == "RuntimeError"


# --------------------------------------------------------------------------------------------
# Refusals: resolve time
# --------------------------------------------------------------------------------------------

def test_the_probe_reports_what_cudnn_says_once_per_device():
    frontend = FakeFrontend(fail_at="create_execution_plans", fail_message="sdpa fp8 forward is not supported")
    runner = CudnnFp8Attention()
    reason = runner.unavailable_reason(frontend, torch.device("cpu"))
    assert reason == ("cuDNN 9.19.0 (cudnn-frontend 1.32.0) cannot build its fp8 attention graph for head dim 128 "
                      "here: sdpa fp8 forward is not supported")
    assert runner.unavailable_reason(frontend, torch.device("cpu")) == reason and len(frontend.graphs) == 1


def test_a_supported_probe_leaves_its_graph_for_the_calls():
    frontend, runner = FakeFrontend(), CudnnFp8Attention()
    assert runner.unavailable_reason(frontend, torch.device("cpu")) is None
    assert len(frontend.graphs) == 1


def test_a_cudnn_older_than_9_1_is_refused_with_its_version():
    reason = CudnnFp8Attention().unavailable_reason(FakeFrontend(version=90000), torch.device("cpu"))
    assert reason == "cuDNN's fp8 attention needs cuDNN 9.1 or newer, and this one is 9.0.0"


def test_a_frontend_without_a_cudnn_library_says_so():
    frontend = FakeFrontend()
    frontend.backend_version = lambda: (_ for _ in ()).throw(RuntimeError("Unable to find symbol cudnnGetVersion"))
    reason = CudnnFp8Attention().unavailable_reason(frontend, torch.device("cpu"))
    assert reason == "cudnn-frontend 1.32.0 found no usable cuDNN library (Unable to find symbol cudnnGetVersion)"


def test_without_the_frontend_the_error_names_the_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cudnn", None)  # `import cudnn` fails, as when not installed
    with pytest.raises(BackendUnavailableError, match=r"'cudnn_fp8'.*pip install nvidia-cudnn-frontend") as err:
        check_backend("cudnn_fp8", "cuda")
    assert "\n" not in str(err.value)


def test_cudnn_fp8_on_a_cpu_device_needs_cuda(monkeypatch):
    monkeypatch.setitem(sys.modules, "cudnn", FakeFrontend())
    with pytest.raises(BackendUnavailableError, match="'cudnn_fp8'.*needs a CUDA device"):
        check_backend("cudnn_fp8", "cpu")


def test_a_gpu_older_than_hopper_is_refused_with_its_capability(monkeypatch):
    monkeypatch.setitem(sys.modules, "cudnn", FakeFrontend())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
    assert REGISTRY["cudnn_fp8"].unavailable_reason(torch.device("cuda", 0)) == (
        "it needs a GPU of compute capability 9.0 or newer, and this one is 8.9")


def test_cudnn_fp8_is_one_opaque_op_inside_a_compiled_function(monkeypatch):
    frontend = FakeFrontend()
    monkeypatch.setitem(sys.modules, "cudnn", frontend)
    runner = REGISTRY["cudnn_fp8"].call
    for state in ("_handles", "_graphs", "_probed"):  # the process's runner, emptied for this test
        monkeypatch.setattr(runner, state, {})
    fn = REGISTRY["cudnn_fp8"].bind(torch.device("cpu"))
    q, k, v = _qkv(lq=64, lk=64)
    compiled = torch.compile(lambda q, k, v: fn(q, k, v) + 1, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), fn(q, k, v) + 1)
    assert runner is attention_module._CUDNN_FP8 and len(frontend.graphs) == 1
