"""Is there a faster exact (bf16) cuDNN attention than the one torch's SDPA picks?

torch's `SDPBackend.CUDNN_ATTENTION` builds a cuDNN graph and runs the first plan cuDNN's heuristics
rank. This script times, at Wan's self-attention shapes (B=1, H=40, D=128; 480p 32,760 and 720p
75,600 tokens), torch's cuDNN path on the two layouts a caller can hand it, and every plan cudnn-frontend
can build for the same bf16 forward graph (heuristics A, B and FALLBACK), each checked against torch's
output. One JSON file: TFLOP/s per (shape, variant) and the relative L2 error of each plan.

    python3 bench/cudnn_bf16_plans.py --out $OUT/cudnn-bf16-plans.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from measure import cuda_seconds, drift  # bench/measure.py

TOKENS = {"480p": 32760, "720p": 75600}
HEADS, HEAD_DIM = 40, 128


def torch_cudnn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, contiguous_bhsd: bool) -> torch.Tensor:
    """torch SDPA restricted to cuDNN, on transposed [B, L, H, D] views or on contiguous [B, H, L, D]."""
    qt, kt, vt = (u.transpose(1, 2) for u in (q, k, v))
    if contiguous_bhsd:
        qt, kt, vt = (u.contiguous() for u in (qt, kt, vt))
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        return F.scaled_dot_product_attention(qt, kt, vt).transpose(1, 2)


def frontend_plans(cudnn, handle, q, k, v, reference, iters: int, flops: float, modes: list) -> list[dict]:
    """Every buildable plan of cudnn-frontend's bf16 SDPA forward graph on [B, L, H, D] tensors, timed."""
    b, s, h, d = q.shape
    dims, strides = (b, h, s, d), (s * h * d, d, h * d, 1)
    graph = cudnn.pygraph(io_data_type=cudnn.data_type.BFLOAT16, intermediate_data_type=cudnn.data_type.FLOAT,
                          compute_data_type=cudnn.data_type.FLOAT, handle=handle)
    tq = graph.tensor(uid=1, dim=dims, stride=strides, data_type=cudnn.data_type.BFLOAT16)
    tk = graph.tensor(uid=2, dim=dims, stride=strides, data_type=cudnn.data_type.BFLOAT16)
    tv = graph.tensor(uid=3, dim=dims, stride=strides, data_type=cudnn.data_type.BFLOAT16)
    o, _ = graph.sdpa(q=tq, k=tk, v=tv, generate_stats=False, attn_scale=1.0 / math.sqrt(d))
    o.set_uid(4).set_output(True).set_dim(dims).set_stride(strides).set_data_type(cudnn.data_type.BFLOAT16)
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans(modes)
    graph.check_support()
    count = graph.get_execution_plan_count()
    rows = []
    out = torch.empty_like(q)
    for index in range(count):
        row: dict = {"index": index}
        try:
            row["name"] = graph.get_plan_name_at_index(index)
            graph.build_plan_at_index(index)
            workspace = torch.empty(max(1, graph.get_workspace_size_plan_at_index(index)), dtype=torch.uint8,
                                    device=q.device)
            pack = {1: q, 2: k, 3: v, 4: out}

            def run() -> None:
                graph.execute_plan_at_index(pack, workspace, index=index, handle=handle)

            run()
            torch.cuda.synchronize()
            row["rel_l2_vs_torch_cudnn"] = drift(out, reference)["rel_l2"]
            seconds = cuda_seconds(run, iters, warmup=2)
            row["ms"] = seconds * 1e3
            row["tflops"] = flops / seconds / 1e12
        except Exception as exc:  # noqa: BLE001 - a plan that does not build or run is reported, not fatal
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--sizes", default="480p,720p")
    args = parser.parse_args()
    import cudnn

    device = torch.device("cuda")
    handle = cudnn.create_handle()
    cudnn.set_stream(handle, torch.cuda.current_stream().cuda_stream)
    result = {
        "card": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn_torch": torch.backends.cudnn.version(), "cudnn_frontend": cudnn.__version__,
        "cudnn_backend": cudnn.backend_version_string(), "python": platform.python_version(),
        "iters": args.iters, "shapes": {},
    }
    for size in args.sizes.split(","):
        tokens = TOKENS[size]
        gen = torch.Generator(device=device).manual_seed(0)
        q, k, v = (torch.randn(1, tokens, HEADS, HEAD_DIM, device=device, dtype=torch.bfloat16, generator=gen)
                   for _ in range(3))
        flops = 4.0 * tokens * tokens * HEADS * HEAD_DIM
        reference = torch_cudnn(q, k, v, contiguous_bhsd=False)
        entry: dict = {"tokens": tokens, "flops": flops}
        for label, contiguous in (("torch_cudnn_bshd_views", False), ("torch_cudnn_bhsd_contiguous", True)):
            seconds = cuda_seconds(lambda: torch_cudnn(q, k, v, contiguous), args.iters, warmup=2)
            entry[label] = {"ms": seconds * 1e3, "tflops": flops / seconds / 1e12}
            print(size, label, entry[label], flush=True)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            seconds = cuda_seconds(lambda: F.scaled_dot_product_attention(*(u.transpose(1, 2) for u in (q, k, v))),
                                   args.iters, warmup=2)
        entry["torch_flash2"] = {"ms": seconds * 1e3, "tflops": flops / seconds / 1e12}
        print(size, "torch_flash2", entry["torch_flash2"], flush=True)
        mode_sets = {"A,B,FALLBACK": [cudnn.heur_mode.A, cudnn.heur_mode.B, cudnn.heur_mode.FALLBACK],
                     "A,FALLBACK": [cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK]}
        for label, modes in mode_sets.items():
            try:
                entry["frontend_plans"] = frontend_plans(cudnn, handle, q, k, v, reference, args.iters, flops, modes)
                entry["heuristic_modes"] = label
                break
            except Exception as exc:  # noqa: BLE001 - the graph's own refusal is the finding
                entry[f"frontend_error_{label}"] = f"{type(exc).__name__}: {exc}"[:1000]
                print(size, label, entry[f"frontend_error_{label}"], flush=True)
        result["shapes"][size] = entry
        del q, k, v, reference
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
