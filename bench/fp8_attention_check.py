"""Does an fp8 attention backend (`cudnn_fp8` or `fa3_fp8`) run on this GPU, and how far is it from cuDNN bf16?

    python3 bench/fp8_attention_check.py [--backend cudnn_fp8|fa3_fp8] [--traceback]   # on a Hopper GPU (~1 min)

Prints the versions (torch, CUDA, torch's cuDNN, the card; for cudnn_fp8 cudnn-frontend and the cuDNN
library it loaded, for fa3_fp8 the library file), then, step by step: for cudnn_fp8 the frontend's import
and one fp8 graph built directly at a small shape; the backend's resolve-time check through the
registry; fp8 attention against cuDNN bf16 on random bf16 q, k, v at a few shapes (rel. L2, cosine, PSNR,
the norm ratio, cudnn_fp8's amax outputs, and the time of each kernel); and the backend inside a
compiled function (one opaque op). Any failure is one line naming the step (with --traceback, the
failing step's traceback first), and the exit status is non-zero: 2 no GPU or no frontend, 3 the graph
or the check refused, 1 a wrong or failed result. Expected drift: rel. L2 ~0.06 for cudnn_fp8 (five
e4m3 roundings, wan_runtime/fp8_attention.py), ~0.05 for fa3_fp8 (four, wan_runtime/fa3_attention.py);
the check fails outside 0.01 .. 0.1.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wan_runtime.attention import REGISTRY, check_backend, resolve_attention  # noqa: E402
from wan_runtime.fp8_attention import AMAX_O, AMAX_S, CudnnFp8Attention, one_line  # noqa: E402

from measure import cuda_seconds, drift  # noqa: E402  (bench/measure.py)

GRAPH_SHAPE = (1, 1024, 1024, 8, 128)  # (B, Lq, Lk, H, D) of the graph built directly
SHAPES = [(1, 1024, 8, 128), (1, 4680, 40, 128), (2, 2048, 40, 128), (1, 32760, 40, 128),
          (1, 75600, 40, 128)]  # [B, L, H, D]: ... 480p and 720p at 81 frames
DRIFT_RANGE = (0.01, 0.1)


SHOW_TRACEBACK = False
BACKEND = "cudnn_fp8"


def fail(step: str, exc: BaseException | str, status: int = 1) -> int:
    """Print one line naming the step and the reason (after the traceback, with --traceback); return the status."""
    if SHOW_TRACEBACK and isinstance(exc, BaseException):
        traceback.print_exception(exc)
    reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {one_line(exc, limit=500)}"
    print(f"fp8_attention_check ({BACKEND}): FAILED at {step}: {reason[:500]}", flush=True)
    return status


def compare(shape: tuple[int, int, int, int]) -> str | None:
    """Print fp8 vs bf16 at one shape; return why the result is wrong, or None."""
    b, length, h, d = shape
    gen = torch.Generator("cuda").manual_seed(0)
    q, k, v = (torch.randn(*shape, device="cuda", generator=gen, dtype=torch.bfloat16) for _ in range(3))
    fp8_fn, bf16_fn = resolve_attention(BACKEND, "cuda"), resolve_attention("cudnn", "cuda")
    with torch.inference_mode():
        fp8, exact = fp8_fn(q, k, v), bf16_fn(q, k, v)
        t_fp8, t_bf16 = cuda_seconds(lambda: fp8_fn(q, k, v)), cuda_seconds(lambda: bf16_fn(q, k, v))
    measured = drift(fp8, exact)
    rel, cosine, psnr = measured["rel_l2"], measured["cosine"], measured["psnr_db"]
    amax = ""
    if BACKEND == "cudnn_fp8":
        entry = REGISTRY["cudnn_fp8"].call.graph(sys.modules["cudnn"], q.device, (b, length, length, h, d))
        amax = f"amax_s {entry.constants[AMAX_S].item():.4g}, amax_o {entry.constants[AMAX_O].item():.4g}, "
    flops = 4 * b * length * length * h * d
    print(f"  {list(shape)}: rel L2 {rel:.4f}, cosine {cosine:.5f}, PSNR {psnr:.1f} dB, "
          f"norm ratio {(fp8.float().norm() / exact.float().norm()).item():.4f}, {amax}finite {bool(torch.isfinite(fp8).all())}; "
          f"fp8 {t_fp8 * 1e3:.2f} ms ({flops / t_fp8 / 1e12:.0f} TFLOP/s), "
          f"bf16 {t_bf16 * 1e3:.2f} ms ({flops / t_bf16 / 1e12:.0f} TFLOP/s), {t_bf16 / t_fp8:.2f}x", flush=True)
    if fp8.shape != q.shape or fp8.dtype != torch.bfloat16:
        return f"output {tuple(fp8.shape)} {fp8.dtype}, expected {tuple(q.shape)} torch.bfloat16"
    if not torch.isfinite(fp8).all():
        return "non-finite output"
    if not DRIFT_RANGE[0] < rel < DRIFT_RANGE[1]:
        return f"rel L2 {rel:.4f} outside {DRIFT_RANGE} at {list(shape)}"
    return None


def main() -> int:
    """Run the checks in order; stop at the first failure."""
    global SHOW_TRACEBACK, BACKEND
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cudnn_fp8", choices=["cudnn_fp8", "fa3_fp8"])
    parser.add_argument("--traceback", action="store_true", help="print the failing step's traceback")
    args = parser.parse_args()
    SHOW_TRACEBACK, BACKEND = args.traceback, args.backend
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, torch's cuDNN {torch.backends.cudnn.version()}",
          flush=True)
    if not torch.cuda.is_available():
        return fail("device", "torch sees no CUDA device", 2)
    print(f"GPU {torch.cuda.get_device_name()}, compute capability {torch.cuda.get_device_capability()}", flush=True)
    if BACKEND == "cudnn_fp8":
        status = check_cudnn_graph()
        if status:
            return status
    else:
        print(f"library {REGISTRY['fa3_fp8'].library_path()}", flush=True)
    try:
        start = time.perf_counter()
        check_backend(BACKEND, "cuda")
        print(f"resolve: {BACKEND} can run here ({time.perf_counter() - start:.2f} s)", flush=True)
    except Exception as exc:  # noqa: BLE001
        return fail("resolve", exc, 3)
    status = 0
    for shape in SHAPES:  # every shape, even after a failure: each is its own evidence
        try:
            wrong = compare(shape)
        except Exception as exc:  # noqa: BLE001
            wrong = exc
        if wrong is not None:
            status = fail(f"fp8 attention at {list(shape)}", wrong)
    if status:
        return status
    try:
        fn = resolve_attention(BACKEND, "cuda")
        q, k, v = (torch.randn(1, 1024, 8, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        compiled = torch.compile(lambda q, k, v: fn(q, k, v) + 1, backend="aot_eager", fullgraph=True)
        with torch.inference_mode():
            torch.testing.assert_close(compiled(q, k, v), fn(q, k, v) + 1)
        print("compiled: one opaque op, same result", flush=True)
    except Exception as exc:  # noqa: BLE001
        return fail(f"torch.compile around {BACKEND}", exc)
    print(f"fp8_attention_check ({BACKEND}): OK", flush=True)
    return 0


def check_cudnn_graph() -> int:
    """Import cudnn-frontend and build one fp8 graph directly; 0, or the failure's status."""
    try:
        import cudnn
        print(f"cudnn-frontend {cudnn.__version__} ({cudnn.__file__}), "
              f"cuDNN library {cudnn.backend_version_string()}", flush=True)
    except Exception as exc:  # noqa: BLE001 - the import's own error is the reason
        return fail("import cudnn (pip install nvidia-cudnn-frontend)", exc, 2)
    try:
        start = time.perf_counter()
        entry = CudnnFp8Attention().graph(cudnn, torch.device("cuda", torch.cuda.current_device()), GRAPH_SHAPE)
        print(f"graph {list(GRAPH_SHAPE)} (B, Lq, Lk, H, D) built ({time.perf_counter() - start:.2f} s), "
              f"workspace {entry.workspace.numel()} bytes", flush=True)
    except Exception as exc:  # noqa: BLE001
        return fail(f"building one fp8 graph {list(GRAPH_SHAPE)}", exc, 3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
