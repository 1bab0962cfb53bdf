"""`wan-generate`: the official generate.py flags (plus the aliases users know) on top of WanI2V."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from wan_runtime.config import get_preset
from wan_runtime.errors import ConfigError, WanError
from wan_runtime.memory import MemoryPlan
from wan_runtime.observer import StepInfo
from wan_runtime.parallel import ParallelPlan
from wan_runtime.parallel.launch import LaunchEnv, rank_device, shutdown
from wan_runtime.parallel.plan import check_launch
from wan_runtime.pipeline import WanI2V
from wan_runtime.request import GenerationRequest, RefineOptions
from wan_runtime.video_io import write_mp4


# ------------------------------------------------------------------ configuration.json
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResolutionSection(_Strict):
    target: Optional[Literal["480p", "720p"]] = None
    scale_factor: Optional[float] = None
    anti_aliasing: Optional[bool] = None


class VAESection(_Strict):
    compression_ratio: Optional[str] = None
    tile_size: Optional[int] = None


class DiffusionSection(_Strict):
    num_inference_steps: Optional[int] = None
    guidance_scale: Optional[float] = None


class ConfigurationFile(_Strict):
    """The `configuration.json` of community write-ups; every key optional, flags win."""

    resolution: ResolutionSection = ResolutionSection()
    vae: VAESection = VAESection()
    diffusion: DiffusionSection = DiffusionSection()


def read_configuration(path: Path) -> ConfigurationFile:
    """Parse and validate a configuration.json; errors name the file and the key."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid JSON ({exc})") from None
    try:
        return ConfigurationFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"--config {path}: {problems}") from None


# ------------------------------------------------------------------ argument parsing
def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The wan-generate argument parser (official flags first, then aliases and extensions)."""
    p = argparse.ArgumentParser(
        prog="wan-generate",
        description="Generate a video with Wan2.2-I2V-A14B (or the tiny preset) from an image and a prompt.",
    )
    # Defaults are None so a configuration file can fill what the command line leaves out.
    p.add_argument("--task", default="i2v-A14B", help="only i2v-A14B is supported")
    p.add_argument("--size", default=None, help="W*H max area (1280*720, 720*1280, 832*480, 480*832, or custom "
                   "multiples of 16) or 480p/720p; the image's aspect is kept. Default 1280*720")
    p.add_argument("--frame_num", type=int, default=None, help="4n+1 frames (default 81)")
    p.add_argument("--ckpt_dir", type=Path, default=None, help="checkpoint folder (official or Diffusers layout)")
    p.add_argument("--image", required=True, help="input image (PNG/JPEG)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative_prompt", default="", help="empty -> the official default negative prompt")
    p.add_argument("--base_seed", type=int, default=-1, help="-1 picks a random seed (printed)")
    p.add_argument("--sample_solver", choices=["unipc", "dpm++"], default="unipc")
    p.add_argument("--sample_steps", "--num_inference_steps", dest="sample_steps", type=int, default=None)
    p.add_argument("--sample_shift", type=float, default=None, help="default 5.0 (3.0 suggested for 480p)")
    p.add_argument("--sample_guide_scale", "--guidance_scale", dest="sample_guide_scale", default=None,
                   help="one value for both experts, or LOW,HIGH as the official tuple order")
    p.add_argument("--offload_model", type=_bool, default=None,
                   help="True: only the active expert on the GPU, T5 back to CPU after encoding "
                        "(default True, as upstream on one GPU)")
    p.add_argument("--convert_model_dtype", action="store_true", help="run the experts in bf16")
    p.add_argument("--t5_cpu", action="store_true", help="run the text encoder on the CPU")
    p.add_argument("--t5_fsdp", action="store_true", help="shard the text encoder over the ranks (FSDP2)")
    p.add_argument("--dit_fsdp", action="store_true", help="shard each expert over its ranks (FSDP2)")
    p.add_argument("--ulysses_size", type=int, default=1,
                   help="sequence-parallel degree: ranks that split every forward's tokens (under torchrun)")
    p.add_argument("--cfg_parallel", action="store_true",
                   help="conditional and unconditional forwards on different ranks (doubles the ranks)")
    p.add_argument("--save_file", type=Path, default=None, help="output mp4 (default: a name from the prompt)")
    p.add_argument("--single_expert", action="store_true", help="the low-noise expert for every step")
    p.add_argument("--enable_refiner", action="store_true",
                   help="480p pass, upscale, re-noise, finish at the target with the low-noise expert")
    p.add_argument("--config", type=Path, default=None, help="configuration.json (flags win over it)")
    p.add_argument("--preset", choices=["a14b", "tiny"], default="a14b")
    p.add_argument("--weights", choices=["synthetic"], default=None,
                   help="synthetic: seeded random weights at the real shapes, no checkpoint needed")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--attention", default="auto", help="attention backend (auto, cudnn, flash, efficient, math, ...)")
    p.add_argument("--vae_tile_size", type=int, default=None, help="VAE spatial tile in pixels (default: off)")
    p.add_argument("--dit_blocks", choices=["resident", "stream"], default="resident",
                   help="stream: the active expert's blocks stay in pinned host memory and are copied to the GPU "
                        "ahead of the compute (implies --offload_model True)")
    p.add_argument("--prefetch_blocks", type=int, default=2, help="blocks copied ahead under --dit_blocks stream")
    p.add_argument("--fp8", action="store_true",
                   help="store the experts' block weights as scaled fp8 (e4m3), compute in bf16")
    p.add_argument("--host_memory", choices=["pinned", "pageable"], default="pinned",
                   help="how offloaded experts are held on the host: pinned (fast switches, both experts in RAM) "
                        "or pageable (as upstream)")
    p.add_argument("--vram_budget_gib", type=float, default=None,
                   help="cap this process's GPU memory (e.g. 24 to behave like an RTX 4090); CUDA only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@dataclass
class Invocation:
    """What a wan-generate command line resolves to."""

    source: str | Path
    preset: str
    device: str
    memory: MemoryPlan
    attention: str
    request: GenerationRequest
    save_file: Path
    parallel: ParallelPlan | None = None  # None: a single process (no torchrun)
    rank: int = 0


def resolve(args: argparse.Namespace) -> Invocation:
    """Combine flags, configuration file and upstream defaults; refuse what is not supported."""
    if args.task != "i2v-A14B":
        raise ConfigError(f"--task {args.task!r} is not supported; this runtime implements i2v-A14B only")
    if (args.ckpt_dir is None) == (args.weights is None):
        raise ConfigError("give exactly one of --ckpt_dir DIR (a checkpoint) or --weights synthetic")
    conf = read_configuration(args.config) if args.config else ConfigurationFile()
    if conf.vae.compression_ratio is not None and conf.vae.compression_ratio != "4x16x16":
        raise ConfigError(
            f"--config vae.compression_ratio {conf.vae.compression_ratio!r}: this model's VAE + patching "
            "compresses 4x16x16 (time x height x width); set it to \"4x16x16\" or remove the key"
        )
    size = args.size or conf.resolution.target or "1280*720"
    steps = _first_given(args.sample_steps, conf.diffusion.num_inference_steps, 40)
    shift = args.sample_shift if args.sample_shift is not None else 5.0
    guide_low, guide_high = _guidance(args.sample_guide_scale, conf.diffusion.guidance_scale)
    anti_alias = conf.resolution.anti_aliasing if conf.resolution.anti_aliasing is not None else True
    refine = RefineOptions(
        scale_factor=conf.resolution.scale_factor or 1.5,
        anti_aliasing=anti_alias,
    )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    launch = LaunchEnv.read()  # torchrun's ranks; a single process is rank 0 of 1
    device = str(rank_device(torch.device(device), launch))
    offload = args.offload_model
    if offload is None:  # as upstream: offload on one GPU, not when several share the work
        offload = (device.startswith("cuda") and launch.world_size == 1) or args.dit_blocks == "stream"
    memory = MemoryPlan(
        experts="swap" if offload else "resident",
        text_encoder="cpu" if args.t5_cpu else ("offload_after" if offload else "gpu"),
        vae_tiling=args.vae_tile_size or conf.vae.tile_size,
        weight_dtype="fp8" if args.fp8 else ("bf16" if args.convert_model_dtype else "fp32"),
        dit_blocks=args.dit_blocks,
        prefetch_blocks=args.prefetch_blocks,
        host_memory=args.host_memory,
        vram_budget_gib=args.vram_budget_gib,
    )
    parallel = ParallelPlan(ulysses_size=args.ulysses_size, cfg_parallel=args.cfg_parallel,
                            dit_fsdp=args.dit_fsdp, t5_fsdp=args.t5_fsdp)
    check_launch(parallel, memory, get_preset(args.preset).dit.num_heads, launch.world_size,
                 launch.local_world_size, torch.cuda.device_count() if device.startswith("cuda") else None)
    mode = "refine" if args.enable_refiner else ("single_expert" if args.single_expert else "both")
    if args.enable_refiner and args.single_expert:
        raise ConfigError("--enable_refiner and --single_expert exclude each other; pick one")
    request = GenerationRequest(
        image=args.image,
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        size=size,
        frames=_first_given(args.frame_num, 81),
        steps=steps,
        shift=shift,
        guide_scale_high=guide_high,
        guide_scale_low=guide_low,
        solver=args.sample_solver,
        seed=args.base_seed,
        mode=mode,
        refine=refine,
        output_anti_aliasing=anti_alias,
    )
    save = args.save_file or Path(f"{args.task}_{size.replace('*', 'x')}_{_slug(args.prompt)}.mp4")
    source = "synthetic" if args.weights else args.ckpt_dir
    return Invocation(source, args.preset, device, memory, args.attention, request, save,
                      parallel if launch.torchrun else None, launch.rank)


def _first_given(*values):
    """The first value that is not None (so an explicit 0 reaches validation instead of a default)."""
    return next(v for v in values if v is not None)


def _guidance(flag: str | None, conf_value: float | None) -> tuple[float, float]:
    if flag is None:
        value = conf_value if conf_value is not None else 3.5
        return value, value
    parts = [p for p in flag.replace(" ", "").split(",") if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--sample_guide_scale {flag!r}: give a number or LOW,HIGH") from None
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise ConfigError(f"--sample_guide_scale {flag!r}: give a number or LOW,HIGH")


def _slug(text: str, limit: int = 40) -> str:
    keep = "".join(c if c.isalnum() else "_" for c in text.strip())[:limit]
    return keep.strip("_") or "video"


# ------------------------------------------------------------------ progress and summary
@dataclass
class ConsoleObserver:
    """Stage wall-clock times and a progress bar over the denoising steps."""

    device: torch.device
    show_progress: bool = True
    stage_s: dict[str, float] = field(default_factory=dict)
    _bar: object = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.stage_s[name] = self.stage_s.get(name, 0.0) + time.perf_counter() - start

    def on_step(self, info: StepInfo) -> None:
        if not self.show_progress:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=info.total, desc="denoise", unit="step", file=sys.stderr)
        self._bar.set_postfix_str(f"{info.expert} t={info.timestep:.0f}", refresh=False)
        self._bar.update(1)
        if info.index == info.total - 1:
            self.close()

    def close(self) -> None:
        """Close the progress bar, if one is open."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `wan-generate`."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    obs = None
    try:
        inv = resolve(args)
        device = torch.device(inv.device)
        obs = ConsoleObserver(device, show_progress=not args.quiet and inv.rank == 0)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        pipe = WanI2V.load(inv.source, inv.preset, device, inv.memory, inv.attention, observer=obs,
                           parallel=inv.parallel)
        result = pipe.generate(inv.request, observer=obs)
        pipe.close()
        shutdown()  # the process group of a torchrun rank (nothing in a single process)
        if not pipe.is_output_rank:
            return 0  # rank 0 writes the video and prints the summary
        path = write_mp4(result.frames, inv.save_file, fps=pipe.cfg.fps)
    except WanError as exc:
        print(f"wan-generate: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if obs is not None:
            obs.close()  # never leave a progress bar over an error message
    geo = result.geometry
    print(f"saved {path} ({geo.width}x{geo.height}, {result.frames.shape[0]} frames, {pipe.cfg.fps} fps)")
    print(f"seed {result.seed}  (repeat with --base_seed {result.seed})")
    print(f"steps: {result.steps_high} high-noise + {result.steps_low} low-noise; tokens {geo.tokens}")
    for name, seconds in obs.stage_s.items():
        print(f"  {name:<13} {seconds:9.3f} s")
    print(f"  {'total':<13} {sum(v for k, v in obs.stage_s.items() if k != 'load'):9.3f} s (without load)")
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        reserved = torch.cuda.max_memory_reserved(device) / 2**30
        print(f"peak GPU memory: {peak:.2f} GiB allocated, {reserved:.2f} GiB reserved")
        if pipe.vram_budget is not None:
            print(pipe.vram_budget.describe())
    else:
        print("peak GPU memory: n/a (ran on the CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
