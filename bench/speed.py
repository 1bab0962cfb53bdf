"""One A14B expert forward against diffusers, with every speed option, in one GPU call (<= 9 minutes).

    python3 bench/speed.py [--out DIR] [--sizes 720p,480p] [--budget-s 510]    # the GPU run
    python3 bench/speed.py --dry [--compile-backend aot_eager]                  # the same code, tiny, CPU

What it measures, in this order (each result is written to DIR/speed.json as soon as it exists, so a
call cut short keeps what it measured; anything that no longer fits the time budget is skipped, and
says so):

1. The text encoder under `text_encoder=offload_after` (umT5-XXL, bf16, the two prompts of a
   generation): resident encode, the pinned host copy the pipeline now keeps (copy in + encode +
   park), and the old pageable `.to()` round trip; the embeddings must be identical.
2. One expert forward (batch 1, 512 text tokens) at 720p/81f (75,600 tokens), then 480p/81f (32,760):
       diffusers      WanTransformer3DModel holding the very tensors of ours (tests/helpers.py)
       exact          ours, cuDNN attention, eager blocks, bf16 (the reference of every drift)
       compiled       ours, compile: blocks (inductor), cuDNN
       sage           ours, SageAttention for self-attention, cuDNN for cross-attention
       flash_attn4    ours, FlashAttention-4 for self-attention (only where it is installed)
       cudnn_fp8      ours, cuDNN's fp8 attention for self-attention (cudnn-frontend, Hopper), cuDNN cross
       fa3_fp8        ours, FlashAttention-3's fp8 kernel for self-attention (bench/fa3_build.sh, Hopper)
       fp8            ours, fp8 storage + fp8 compute (matmul: fp8), cuDNN
       fastest        compiled + fp8 compute + the self-attention of the quickest of exact, sage,
                      flash_attn4, cudnn_fp8 and fa3_fp8 at the first size (chosen there, kept for the others)
   Each is called twice: the first call's time (`first_s`) includes a compile or a kernel build, the
   second is the forward (`s`); `compile_s` = first_s - s. Drift against `exact`: relative L2,
   cosine and a PSNR over the output tensor (peak = the reference's range). Dynamo's counters prove
   that one compile serves all 40 blocks (`frames_compiled` is 1 per shape and plan).
3. Attention alone (40 heads x 128, bf16) at each size for every backend this machine has: seconds,
   TFLOP/s and drift against cuDNN (where SageAttention, FlashAttention-4 or cuDNN fp8 win or lose;
   each of those this machine lacks is a row saying why). A plan or backend that fails is a row with
   its one-line error; the others are still measured.
4. With --profile: the 10 costliest kernels of one compiled and one eager block at the first size.

The expert is built directly in bf16 on the GPU with synthetic weights (~1 s; fp8 quantized from the
same values). --dry runs every step on the tiny preset on the CPU at small shapes (what CI machines
can check before a GPU minute is spent); SageAttention, FlashAttention-4, cuDNN fp8 attention and
pinned memory need CUDA and are reported as skipped there.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the project, and tests/helpers.py (diffusers builder)

from wan_runtime.attention import REGISTRY, available_backends, resolve_ops  # noqa: E402
from wan_runtime.block_runner import ResidentBlocks, eager_call  # noqa: E402
from wan_runtime.compile import compile_counts, compiled_block_call  # noqa: E402
from wan_runtime.compute import ComputePlan  # noqa: E402
from wan_runtime.config import A14B, DEFAULT_NEGATIVE_PROMPT, TINY, ModelConfig  # noqa: E402
from wan_runtime.errors import first_line  # noqa: E402
from wan_runtime.experts import load_expert  # noqa: E402
from wan_runtime.fp8 import fp8_matmul_unavailable_reason  # noqa: E402
from wan_runtime.memory import MemoryPlan  # noqa: E402
from wan_runtime.offload import WeightGroup  # noqa: E402
from wan_runtime.weights import load_dit, load_text_encoder  # noqa: E402

from measure import drift  # noqa: E402  (bench/measure.py)

# (name, latent frames, latent height, latent width): 81 frames at 1280x720 and 832x480
GPU_SIZES = {"720p": (21, 90, 160), "480p": (21, 60, 104)}
DRY_SIZES = {"720p": (2, 10, 16), "480p": (2, 6, 10)}
PROMPT = "An astronaut waves at the camera while the flag behind her moves in the wind"
# Optional attention kernels: measured where they run, a `skipped` row with the reason where not.
LOSSY_ATTENTION = ("sage", "flash_attn4", "cudnn_fp8", "fa3_fp8")
# Forward plans whose self-attention the `fastest` plan may take (each is eager bf16 with it).
FASTEST_CANDIDATES = ("exact", *LOSSY_ATTENTION)


@dataclass
class Bench:
    """Where results go, the time budget, and the device."""

    out: Path
    device: torch.device
    config: ModelConfig
    budget_s: float
    compile_backend: str
    start: float = field(default_factory=time.perf_counter)
    results: dict[str, Any] = field(default_factory=dict)

    def elapsed(self) -> float:
        """Seconds since the script started."""
        return time.perf_counter() - self.start

    def fits(self, estimate_s: float) -> bool:
        """True when a step of about `estimate_s` still fits the budget."""
        return self.elapsed() + estimate_s <= self.budget_s

    def save(self) -> None:
        """Write everything measured so far (atomically)."""
        self.results["elapsed_s"] = round(self.elapsed(), 1)
        tmp = self.out / "speed.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=1, default=str))
        tmp.replace(self.out / "speed.json")

    def sync(self) -> None:
        """Wait for the device."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        """fn()'s result and its synchronized wall time in seconds."""
        self.sync()
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        return out, time.perf_counter() - t0


def environment(device: torch.device) -> dict[str, Any]:
    """Card, versions and threads: the conditions of every figure."""
    import importlib.metadata as md

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "threads": torch.get_num_threads(), "diffusers": version("diffusers"),
           "sageattention": version("sageattention"), "flash_attn_4": version("flash-attn-4"),
           "cudnn_frontend": version("nvidia-cudnn-frontend"),
           "triton": version("triton"), "backends_available": available_backends(device)}
    if device.type == "cuda":
        env.update(card=torch.cuda.get_device_name(device), capability=list(torch.cuda.get_device_capability(device)),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return env


# --------------------------------------------------------------------------------------------
# 1. The text encoder's offload
# --------------------------------------------------------------------------------------------

def bench_text_encoder(bench: Bench, repeats: int) -> None:
    """Resident encode vs the pinned host copy vs the old pageable round trip (same embeddings)."""
    device, out = bench.device, {}
    bench.results["text_encoder"] = out
    encoder = load_text_encoder("synthetic", bench.config, "bf16", device)
    prompts = [PROMPT, DEFAULT_NEGATIVE_PROMPT]

    def encode():
        return encoder.encode(prompts, device)

    with torch.inference_mode():
        reference, _ = bench.timed(encode)  # warm-up (kernels, tokenizer)
        out["resident_s"] = min(bench.timed(encode)[1] for _ in range(repeats))
        out["weights_gib"] = round(sum(p.numel() * p.element_size() for p in encoder.model.parameters()) / 2**30, 2)

        pinned = device.type == "cuda"
        group, build_s = bench.timed(lambda: WeightGroup(encoder.model, pinned=pinned))
        out["pinned_host_copy"] = pinned
        out["host_copy_build_s"] = round(build_s, 2)

        def offload_after():
            group.to_device(device)
            embeddings = encode()
            group.to_host()
            return embeddings

        times, same = [], True
        for _ in range(repeats):
            embeddings, seconds = bench.timed(offload_after)
            times.append(seconds)
            same = same and all(torch.equal(a, b) for a, b in zip(embeddings, reference))
        out["offload_after_pinned_s"] = times
        out["offload_after_pinned_same_embeddings"] = same
        bench.save()

        if device.type == "cuda" and bench.fits(30):
            group.to_device(device)
            encoder.model.to("cpu")  # pageable host memory, as the pipeline did before

            def pageable():
                encoder.model.to(device)
                embeddings = encode()
                encoder.model.to("cpu")
                return embeddings

            embeddings, seconds = bench.timed(pageable)
            out["offload_after_pageable_s"] = seconds
            out["offload_after_pageable_same_embeddings"] = all(torch.equal(a, b) for a, b in zip(embeddings, reference))
    del encoder, group
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    bench.save()


# --------------------------------------------------------------------------------------------
# 2. One expert forward, every plan
# --------------------------------------------------------------------------------------------

def inputs(bench: Bench, latent: tuple[int, int, int]) -> tuple[torch.Tensor, ...]:
    """x, t, context, y of one forward (bf16, seeded)."""
    d, device = bench.config.dit, bench.device
    gen = torch.Generator(device).manual_seed(0)
    x = torch.randn(1, 16, *latent, device=device, generator=gen, dtype=torch.bfloat16)
    y = torch.randn(1, 20, *latent, device=device, generator=gen, dtype=torch.bfloat16)
    context = torch.randn(1, d.text_len, d.text_dim, device=device, generator=gen, dtype=torch.bfloat16)
    return x, torch.tensor([950.0], device=device), context, y


@dataclass
class Plan:
    """One way to run the expert forward."""

    name: str
    model: str  # "bf16" | "fp8" | "diffusers"
    attention: str = "cudnn"
    compiled: bool = False
    needs: str | None = None  # why it cannot run here, if it cannot


def attention_reason(device: torch.device, name: str) -> str | None:
    """Why attention backend `name` cannot run on `device`, or None."""
    reason = REGISTRY[name].unavailable_reason(device)
    return None if reason is None else f"attention backend {name!r} is not available: {reason}"


def fastest_plan(bench: Bench, attention: str) -> Plan:
    """Compiled blocks, fp8 storage and compute, and self-attention `attention`."""
    needs = fp8_matmul_unavailable_reason(bench.device) or attention_reason(bench.device, attention)
    return Plan("fastest", "fp8", attention, compiled=True, needs=needs)


def combined_plan(bench: Bench, name: str) -> Plan:
    """`compiled:ATTN` (compiled bf16) or `fastest:ATTN` (compiled + fp8 compute) with self-attention ATTN."""
    base, _, attention = name.partition(":")
    if base not in ("compiled", "fastest") or attention not in REGISTRY:
        raise ValueError(f"unknown plan {name!r}: write compiled:ATTN or fastest:ATTN, ATTN one of {sorted(REGISTRY)}")
    if base == "compiled":
        return Plan(name, "bf16", attention, compiled=True, needs=attention_reason(bench.device, attention))
    return replace(fastest_plan(bench, attention), name=name)


def plans(bench: Bench, exact: str, combined: tuple[str, ...] = ()) -> list[Plan]:
    """The plans of the benchmark, each with the reason it cannot run on this machine (if any).

    `fastest` is listed with exact attention; bench_forward gives it the quickest one measured.
    `combined` adds plans named compiled:ATTN / fastest:ATTN (a compiled plan with a chosen attention).
    """
    return [
        Plan("exact", "bf16", exact),
        Plan("diffusers", "diffusers"),
        Plan("compiled", "bf16", exact, compiled=True),
        *(Plan(name, "bf16", name, needs=attention_reason(bench.device, name)) for name in LOSSY_ATTENTION),
        Plan("fp8", "fp8", exact, needs=fp8_matmul_unavailable_reason(bench.device)),
        fastest_plan(bench, exact),
        *(combined_plan(bench, name) for name in combined),
    ]


def quickest_attention(rows: dict[str, Any], listed: list[Plan]) -> str | None:
    """The self-attention of the quickest FASTEST_CANDIDATES plan timed in `rows`, or None if none was."""
    timed = [plan for plan in listed if plan.name in FASTEST_CANDIDATES and "s" in rows.get(plan.name, {})]
    return min(timed, key=lambda plan: rows[plan.name]["s"]).attention if timed else None


def bench_forward(bench: Bench, sizes: list[str], repeats: int, only: list[str] | None = None,
                  exact_last_blocks: int = 0) -> None:
    """Every plan (or those in `only`) at every size; `exact` first at each size (the drift reference)."""
    from helpers import diffusers_sharing

    device, cfg = bench.device, bench.config
    dry = device.type == "cpu"
    exact_attention = "cudnn" if "cudnn" in available_backends(device) else "math"
    models: dict[str, torch.nn.Module] = {}
    built = bench.results.setdefault("build_s", {})
    models["bf16"], built["bf16"] = bench.timed(lambda: load_dit("synthetic", cfg, "high", "bf16", device, exact_attention))
    models["diffusers"] = diffusers_sharing(models["bf16"], cfg.dit, device)
    if fp8_matmul_unavailable_reason(device) is None:
        plan = MemoryPlan(weight_dtype="fp8")
        expert, built["fp8"] = bench.timed(lambda: load_expert("synthetic", cfg, "high", plan, device, exact_attention,
                                                               compute=ComputePlan(matmul="fp8",
                                                                                   exact_last_blocks=exact_last_blocks)))
        models["fp8"] = expert.model
    compiled_call = compiled_block_call(bench.compile_backend)
    bench.results["allocated_gib_after_build"] = round(torch.cuda.memory_allocated() / 2**30, 2) if not dry else None
    forward = bench.results.setdefault("forward", {})
    fastest_attention: str | None = None  # chosen at the first size, just before its `fastest` plan runs

    for size in sizes:
        latent = (DRY_SIZES if dry else GPU_SIZES)[size]
        x, t, context, y = inputs(bench, latent)
        rows = forward.setdefault(size, {"tokens": latent[0] * latent[1] * latent[2] // 4})
        reference = None
        estimate = 30.0 if size == "720p" else 8.0  # seconds per forward on an H100-class card
        listed = plans(bench, exact_attention, tuple(n for n in only or () if ":" in n))
        for plan in listed:
            if only is not None and plan.name not in only and plan.name != "exact":
                continue
            if plan.name == "fastest":
                fastest_attention = fastest_attention or quickest_attention(rows, listed) or exact_attention
                bench.results["fastest_attention"] = fastest_attention
                plan = fastest_plan(bench, fastest_attention)
            if plan.needs is not None or plan.model not in models:
                rows[plan.name] = {"skipped": plan.needs or f"no {plan.model} model"}
                bench.save()
                continue
            cost = 2 * estimate + (90.0 if plan.compiled else 0.0)
            if not dry and not bench.fits(cost):
                rows[plan.name] = {"skipped": f"time budget ({bench.elapsed():.0f} s of {bench.budget_s:.0f} s used)"}
                bench.save()
                continue
            try:
                row = run_plan(bench, plan, models, compiled_call, (x, t, context, y), repeats, exact_attention)
            except Exception as exc:  # noqa: BLE001 - one plan's failure must not lose the others
                row = {"error": f"{type(exc).__name__}: {first_line(exc)}"[:500]}
            output = row.pop("output", None)
            if plan.name == "exact":
                reference = output
            if output is not None and reference is not None:
                row.update(drift(output, reference))
            rows[plan.name] = row
            del output
            print(f"[{bench.elapsed():6.1f} s] {size} {plan.name}: "
                  + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)
            bench.save()
        for name, row in rows.items():
            if isinstance(row, dict) and "s" in row and name != "diffusers" and "s" in rows.get("diffusers", {}):
                row["speedup_vs_diffusers"] = rows["diffusers"]["s"] / row["s"]
        bench.save()


def run_plan(bench: Bench, plan: Plan, models: dict[str, torch.nn.Module], compiled_call,
             args: tuple[torch.Tensor, ...], repeats: int, exact_attention: str) -> dict[str, Any]:
    """Time one plan: the first call (compile/kernel builds included), then `repeats` forwards.

    Cross-attention stays exact in every plan (512 keys: a small share of the time).
    """
    x, t, context, y = args
    model = models[plan.model]
    if plan.model == "diffusers":
        def call():
            return model(torch.cat([x, y], 1), t, context, return_dict=False)[0]
    else:
        model.set_attention(plan.attention, exact_attention)
        model.runner = ResidentBlocks(compiled_call if plan.compiled else eager_call)

        def call():
            return model(x, t, context, y)

    row: dict[str, Any] = {"attention": "sdpa (diffusers)" if plan.model == "diffusers" else list(model.attention_backends),
                           "compiled": plan.compiled, "weights": plan.model}
    if bench.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(bench.device)
    counts = compile_counts()
    with torch.inference_mode():
        output, first = bench.timed(call)
        times = [bench.timed(call)[1] for _ in range(repeats)]
    row["first_s"] = first
    row["s"] = min(times)
    row["repeats_s"] = times
    if plan.compiled:
        after = compile_counts()
        row["compile_s"] = first - row["s"]
        row["frames_compiled"] = after["frames"] - counts["frames"]
        row["graphs_compiled"] = after["graphs"] - counts["graphs"]
    if bench.device.type == "cuda":
        row["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated(bench.device) / 2**30, 2)
    row["output"] = output.float()
    return row


# --------------------------------------------------------------------------------------------
# 3. Attention alone
# --------------------------------------------------------------------------------------------

def bench_attention(bench: Bench, sizes: list[str]) -> None:
    """Every available backend on the self-attention of each size, against cuDNN (or math on a CPU)."""
    device, cfg = bench.device, bench.config.dit
    names = [n for n in available_backends(device) if n not in ("auto", "math") or device.type == "cpu"]
    exact = "cudnn" if "cudnn" in names else "math"
    missing = {name: attention_reason(device, name) for name in LOSSY_ATTENTION if name not in names}
    out = bench.results.setdefault("attention", {})
    for size in sizes:
        latent = (DRY_SIZES if device.type == "cpu" else GPU_SIZES)[size]
        tokens = latent[0] * latent[1] * latent[2] // 4
        gen = torch.Generator(device).manual_seed(0)
        q, k, v = (torch.randn(1, tokens, cfg.num_heads, cfg.head_dim, device=device, generator=gen,
                               dtype=torch.bfloat16) for _ in range(3))
        flops = 4 * tokens * tokens * cfg.num_heads * cfg.head_dim
        rows = out.setdefault(size, {"tokens": tokens})
        reference = None
        for name in [exact, *[n for n in names if n != exact]]:
            if not bench.fits(10):
                rows[name] = {"skipped": "time budget"}
                continue
            try:
                fn = resolve_ops(name, name, device).self_attn
                with torch.inference_mode():
                    _, first = bench.timed(lambda: fn(q, k, v))
                    result, seconds = bench.timed(lambda: fn(q, k, v))
                row = {"first_s": first, "s": seconds, "tflops": flops / seconds / 1e12}
                if reference is None:
                    reference = result
                row.update(drift(result, reference))
            except Exception as exc:  # noqa: BLE001 - one backend's failure must not lose the others
                row = {"error": f"{type(exc).__name__}: {first_line(exc)}"[:500]}
            rows[name] = row
            print(f"[{bench.elapsed():6.1f} s] attention {size} {name}: {row}", flush=True)
            bench.save()
        rows.update({name: {"skipped": reason} for name, reason in missing.items()})
        bench.save()


# --------------------------------------------------------------------------------------------
# 4. Where a block's time goes
# --------------------------------------------------------------------------------------------

def bench_profile(bench: Bench, size: str) -> None:
    """The 10 costliest device kernels of one eager and one compiled bf16 block."""
    from torch.profiler import ProfilerActivity, profile

    from wan_runtime.modules.dit import WanBlock, rope_table

    device, cfg = bench.device, bench.config.dit
    latent = (DRY_SIZES if device.type == "cpu" else GPU_SIZES)[size]
    grid = (latent[0], latent[1] // 2, latent[2] // 2)
    tokens = grid[0] * grid[1] * grid[2]
    with torch.device(device):
        block = WanBlock(cfg).to(torch.bfloat16).eval().requires_grad_(False)
    gen = torch.Generator(device).manual_seed(0)
    x = torch.randn(1, tokens, cfg.dim, device=device, generator=gen)
    e0 = torch.randn(1, 6, cfg.dim, device=device, generator=gen) * 0.1
    context = torch.randn(1, cfg.text_len, cfg.dim, device=device, generator=gen, dtype=torch.bfloat16)
    rope = rope_table(grid, cfg.head_dim, device)
    exact = "cudnn" if "cudnn" in available_backends(device) else "math"
    ops = resolve_ops(exact, exact, device)
    activity = ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU
    out = bench.results.setdefault("profile", {"size": size, "tokens": tokens})
    for name, call in (("eager", eager_call), ("compiled", compiled_block_call(bench.compile_backend))):
        with torch.inference_mode():
            call(block, x, e0, context, rope, ops)
            _, seconds = bench.timed(lambda: call(block, x, e0, context, rope, ops))
            with profile(activities=[activity]) as prof:
                call(block, x, e0, context, rope, ops)
                bench.sync()
        key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)[:10]
        out[name] = {"block_s": seconds,
                     "top_kernels": [{"name": e.key[:120], "ms": round(getattr(e, key, 0.0) / 1e3, 3), "calls": e.count}
                                     for e in events]}
        bench.save()


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------

def table(results: dict[str, Any]) -> str:
    """The forward results as a fixed-width table, then the text encoder's figures."""
    lines = [f"{'size':6} {'plan':12} {'s/forward':>10} {'vs diffusers':>12} {'compile s':>10} "
             f"{'rel L2':>9} {'PSNR dB':>8} {'peak GiB':>9}  note"]
    for size, rows in results.get("forward", {}).items():
        for name, row in rows.items():
            if not isinstance(row, dict):
                continue
            note = row.get("skipped") or row.get("error") or ""

            def fmt(key: str, spec: str) -> str:
                value = row.get(key)
                width = int(spec.split(".")[0] or 0)
                return format(value, spec) if isinstance(value, (int, float)) else f"{'-':>{width}}"

            speedup = row.get("speedup_vs_diffusers")
            speedup = f"{speedup:11.3f}x" if isinstance(speedup, float) else f"{'-':>12}"
            lines.append(f"{size:6} {name:12} {fmt('s', '10.3f')} {speedup} "
                         f"{fmt('compile_s', '10.1f')} {fmt('rel_l2', '9.2e')} {fmt('psnr_db', '8.1f')} "
                         f"{fmt('peak_allocated_gib', '9.1f')}  {note}")
    text = results.get("text_encoder")
    if text:
        lines.append("")
        lines.append("text encoder (offload_after): " + json.dumps(text))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; write speed.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="tiny preset on the CPU at small shapes (checks the code)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "reports/speed-bench")))
    parser.add_argument("--sizes", default="720p,480p", help="comma-separated, largest first (720p,480p)")
    parser.add_argument("--budget-s", type=float, default=510.0, help="skip what would end past this many seconds")
    parser.add_argument("--compile-backend", default="inductor", choices=["inductor", "aot_eager", "eager"])
    parser.add_argument("--repeats", type=int, default=1, help="timed forwards after the first call")
    parser.add_argument("--skip-text-encoder", action="store_true")
    parser.add_argument("--plans", default=None, help="comma-separated subset of the forward plans "
                        "(exact,diffusers,compiled,sage,flash_attn4,cudnn_fp8,fa3_fp8,fp8,fastest, and compiled:ATTN or "
                        "fastest:ATTN for a compiled plan with self-attention ATTN); exact always runs")
    parser.add_argument("--profile", action="store_true", help="kernel profile of one block at the first size")
    parser.add_argument("--exact-last-blocks", type=int, default=0,
                        help="the fp8-compute plans keep the last N blocks in bf16 (ComputePlan.exact_last_blocks)")
    args = parser.parse_args(argv)

    if not args.dry and not torch.cuda.is_available():
        print("bench/speed.py: no CUDA device; run with --dry to check the code on the CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu") if args.dry else torch.device("cuda", 0)
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = [s for s in sizes if s not in GPU_SIZES]
    if unknown:
        print(f"bench/speed.py: unknown size {unknown}; choose from {list(GPU_SIZES)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    # Every plan x size is one more compile of the same block call: keep them all compiled.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 32)
    bench = Bench(args.out, device, TINY if args.dry else A14B, args.budget_s, args.compile_backend)
    bench.results.update(environment=environment(device), dry=args.dry, sizes=sizes,
                         compile_backend=args.compile_backend, budget_s=args.budget_s,
                         exact_last_blocks=args.exact_last_blocks)
    bench.save()
    if not args.skip_text_encoder:
        bench_text_encoder(bench, repeats=3)
        print(f"[{bench.elapsed():6.1f} s] text encoder: {bench.results['text_encoder']}", flush=True)
    bench_attention(bench, sizes)
    bench_forward(bench, sizes, args.repeats, args.plans.split(",") if args.plans else None, args.exact_last_blocks)
    if args.profile and (args.dry or bench.fits(60)):
        bench_profile(bench, sizes[0])
    bench.save()
    print(table(bench.results))
    print(f"written: {args.out / 'speed.json'} ({bench.elapsed():.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
