"""The parallel code path at world size 1 against the plain path: same video, at most 1% per step.

Run as one torchrun rank, so the launch path is the real one (torchrun's environment, the NCCL
process group bound to the GPU). One pipeline is loaded with `parallel=ParallelPlan()`; a plain
pipeline is built from the very same networks (`WanI2V(...)` with no parallel context). Both then
make the same video with the same call, `generate(request)`, in the order plain, parallel, plain, on
the real 40-step schedule with only the first steps of each expert executed (`execute_steps`: one
warmup step, then `--measured` timed steps per expert). The script checks that the frames of the
three runs are identical and that the median step of the parallel path is at most `--limit` percent
slower than that of the plain runs; it prints a table and writes JSON to --out.

GPU (the lent one-GPU machine; A14B, synthetic bf16, 480p/81 frames; about 3 minutes on an H200):
    NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=8 torchrun --standalone --nproc-per-node 1 \\
        bench/parallel_world1.py --out "$OUT"
CPU (tiny preset, gloo; checks the script end to end in seconds, timings are not a verdict):
    OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node 1 bench/parallel_world1.py \\
        --preset tiny --device cpu --size 64*48 --frames 5 --out /tmp/parallel_world1

Exit status: 0 when the frames are identical and (on a GPU) the overhead is within the limit, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wan_runtime.memory import MemoryPlan  # noqa: E402
from wan_runtime.parallel import ParallelPlan  # noqa: E402
from wan_runtime.parallel.launch import LaunchEnv, shutdown  # noqa: E402
from wan_runtime.pipeline import WanI2V, expert_schedule  # noqa: E402
from wan_runtime.request import GenerationRequest  # noqa: E402


class StepClock:
    """Observer: synchronized time after every step, and the stage each step belongs to."""

    def __init__(self, device: torch.device):
        self.device = device
        self.marks: list[tuple[str, int, float]] = []  # (stage, step index, seconds)

    @contextmanager
    def stage(self, name: str):
        yield

    def on_step(self, info) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.marks.append((info.stage, info.index, time.perf_counter()))

    def step_seconds(self) -> list[float]:
        """Seconds of each step that directly follows an executed step of the same stage (warmups excluded)."""
        out = []
        for (stage0, i0, t0), (stage1, i1, t1) in zip(self.marks, self.marks[1:]):
            if stage0 == stage1 and i1 == i0 + 1:
                out.append(t1 - t0)
        return out


def executed_steps(request: GenerationRequest, cfg, per_expert: int) -> list[int]:
    """The first `per_expert` + 1 steps of each expert's range of the schedule (the first one warms up)."""
    experts = expert_schedule(request, cfg)
    steps: list[int] = []
    for name in ("high", "low"):
        steps += [i for i, e in enumerate(experts) if e == name][: per_expert + 1]
    return sorted(steps)


def environment(device: torch.device) -> dict:
    """Where the figures come from."""
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "backend": dist.get_backend() if dist.is_initialized() else None,
           "world_size": dist.get_world_size() if dist.is_initialized() else 1,
           "cpu_threads": torch.get_num_threads(), "NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE")}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   nccl=".".join(map(str, torch.cuda.nccl.version())))
        try:
            import pynvml

            pynvml.nvmlInit()
            env["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception:  # the driver version is a nicety; the figures stand without it
            pass
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="a14b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", default="832*480")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--measured", type=int, default=2, help="timed steps per expert and run (after one warmup step)")
    p.add_argument("--limit", type=float, default=1.0, help="largest allowed step overhead, percent")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "reports/parallel_world1")))
    args = p.parse_args(argv)

    launch = LaunchEnv.read()
    if not launch.torchrun or launch.world_size != 1:
        print("run this as one torchrun rank: torchrun --standalone --nproc-per-node 1 bench/parallel_world1.py ...",
              file=sys.stderr)
        return 2
    gpu = args.device.startswith("cuda")
    memory = MemoryPlan(weight_dtype="bf16" if gpu else "fp32", vae_dtype="bf16" if gpu else "fp32")
    start = time.perf_counter()
    parallel = WanI2V.load("synthetic", args.preset, args.device, memory, parallel=ParallelPlan())
    load_s = time.perf_counter() - start
    # The plain path on the very same networks: no parallel context, nothing else differs.
    plain = WanI2V(parallel.cfg, parallel.device, parallel.memory, parallel.placed, parallel.vae,
                   parallel.text_encoder, parallel.source, check_resources=parallel.check_resources,
                   compute=parallel.compute, text_weights=parallel.text_weights)
    rng = np.random.default_rng(0)
    width, height = (int(v) for v in args.size.split("*"))
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    request = GenerationRequest(image=image, prompt="a cat surfing a wave", size=args.size, frames=args.frames,
                                steps=40, seed=42)
    request = replace(request, execute_steps=frozenset(executed_steps(request, parallel.cfg, args.measured)))

    # plain, parallel, plain: the parallel run sits between two plain ones, so a drift of the clock
    # (boost, temperature) over the minutes shows as a difference between the plain runs.
    runs: list[dict] = []
    for name, pipe in (("plain", plain), ("parallel", parallel), ("plain", plain)):
        clock = StepClock(parallel.device)
        begin = time.perf_counter()
        result = pipe.generate(request, observer=clock)
        runs.append({"path": name, "frames": result.frames, "steps_s": clock.step_seconds(),
                     "generate_s": time.perf_counter() - begin})
    env = environment(parallel.device)  # while the process group is up
    parallel.close()
    shutdown()

    reference = runs[0]["frames"]
    max_diff = max(int(np.abs(run["frames"].astype(int) - reference.astype(int)).max()) for run in runs)
    same = max_diff == 0
    steps = {name: [s for run in runs if run["path"] == name for s in run["steps_s"]] for name in ("plain", "parallel")}
    median = {name: statistics.median(values) for name, values in steps.items()}
    overhead = 100.0 * (median["parallel"] / median["plain"] - 1.0)
    plain_drift = 100.0 * (statistics.median(runs[2]["steps_s"]) / statistics.median(runs[0]["steps_s"]) - 1.0)
    within = overhead <= args.limit

    print(f"\n{args.preset} synthetic {memory.weight_dtype}, {args.size} x {args.frames} frames, "
          f"{parallel.device} ({env.get('gpu', 'cpu')}), {env['backend']} world size {env['world_size']}, "
          f"load {load_s:.1f} s")
    print(f"{'run':<12} {'steps':>5} {'median s/step':>14} {'min':>9} {'max':>9} {'generate s':>11}")
    for number, run in enumerate(runs, 1):
        values = run["steps_s"]
        print(f"{number}. {run['path']:<9} {len(values):>5} {statistics.median(values):>14.4f} {min(values):>9.4f} "
              f"{max(values):>9.4f} {run['generate_s']:>11.2f}")
    print(f"frames identical in all runs: {same} (max |diff| {max_diff})")
    print(f"plain run 3 vs run 1 (drift): {plain_drift:+.3f} %")
    print(f"parallel path overhead per step: {overhead:+.3f} % (limit {args.limit:g} %): "
          f"{'within' if within else 'OVER'}{'' if gpu else ' (CPU: not a verdict)'}")

    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "preset": args.preset, "weights": "synthetic", "weight_dtype": memory.weight_dtype, "size": args.size,
        "frames": args.frames, "schedule_steps": 40, "execute_steps": sorted(request.execute_steps),
        "load_s": load_s, "environment": env,
        "runs": [{"path": run["path"], "steps_s": run["steps_s"], "median_step_s": statistics.median(run["steps_s"]),
                  "generate_s": run["generate_s"]} for run in runs],
        "median_step_s": median, "plain_drift_percent": plain_drift,
        "frames_identical": same, "max_frame_diff": max_diff,
        "overhead_percent": overhead, "limit_percent": args.limit, "within_limit": within,
    }
    path = args.out / "parallel_world1.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0 if same and (within or not gpu) else 1


if __name__ == "__main__":
    raise SystemExit(main())
