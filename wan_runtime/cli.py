"""`wan-generate`: the official generate.py flags (plus the aliases users know) on top of WanI2V.

Every argument is checked against the runtime's parameter spec (wan_runtime/spec.py) before
anything heavy loads: torch, diffusers and transformers are imported only once the command is known
to be valid, so `--help` and argument errors answer at once. Types, defaults, choices and help of
the flags that set one parameter come from the spec; the official flags that stand for a memory
strategy (--offload_model, --t5_cpu, --convert_model_dtype) map onto the plan here.
Errors are one line on stderr (exit 2 for bad input, 1 for an unexpected failure); `--debug` adds
the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from wan_runtime import spec
from wan_runtime.config import PRESETS
from wan_runtime.errors import ConfigError, ParameterError, WanError
from wan_runtime.compute import ComputePlan
from wan_runtime.load_options import LoadOptions
from wan_runtime.memory import MemoryPlan
from wan_runtime.observer import StepInfo
from wan_runtime.parallel.launch import LaunchEnv
from wan_runtime.parallel.plan import ParallelPlan, check_guidance, check_launch
from wan_runtime.request import GenerationRequest

PROG = "wan-generate"


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
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: file not found; give the path of a configuration.json") from None
    except IsADirectoryError:
        inside = path / "configuration.json"
        hint = f"did you mean --config {inside}?" if inside.is_file() else "give the configuration.json file"
        raise ConfigError(f"--config {path} is a folder; {hint}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config {path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start}); save it as UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid JSON ({exc})") from None
    except (OSError, RecursionError) as exc:
        raise ConfigError(f"--config {path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        return ConfigurationFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"--config {path}: {problems}") from None


# ------------------------------------------------------------------ argument parsing
# Flags that set one parameter of the spec (flag and aliases -> parameter): type, choices, default
# and help come from the runtime's value objects.
PARAM_FLAGS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("--size",), "size"),
    (("--frame_num",), "frames"),
    (("--prompt",), "prompt"),
    (("--negative_prompt",), "negative_prompt"),
    (("--base_seed",), "seed"),
    (("--sample_solver",), "solver"),
    (("--sample_steps", "--num_inference_steps"), "steps"),
    (("--sample_shift",), "shift"),
    (("--size_rule",), "size_rule"),
    (("--max_steps",), "limits.max_steps"),
    (("--max_frames",), "limits.max_frames"),
    (("--max_side",), "limits.max_side"),
    (("--vae_tile_size",), "vae_tiling"),
    (("--dit_blocks",), "dit_blocks"),
    (("--prefetch_blocks",), "prefetch_blocks"),
    (("--host_memory",), "host_memory"),
    (("--vram_budget_gib",), "vram_budget_gib"),
    (("--attention",), "attention"),
    (("--cross_attention",), "cross_attention"),
    (("--compile",), "compile"),
    (("--matmul",), "matmul"),
    (("--exact_last_blocks",), "exact_last_blocks"),
    (("--threads",), "threads"),
    (("--ulysses_size",), "ulysses_size"),
    (("--collective_timeout_s",), "collective_timeout_s"),
)
# Switches (store_true) that set a true/false parameter of the spec.
SWITCHES: tuple[tuple[str, str], ...] = (
    ("--t5_fsdp", "t5_fsdp"),
    ("--dit_fsdp", "dit_fsdp"),
    ("--cfg_parallel", "cfg_parallel"),
)


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def add_param_flag(parser: argparse.ArgumentParser, flags: tuple[str, ...], name: str, required: bool = False) -> None:
    """A flag setting the spec's parameter `name` (dest `name`, None when not given): type, choices, help
    and the default shown come from the spec; the spec checks the value."""
    param = spec.lookup(name)
    kwargs: dict[str, Any] = {"dest": name, "default": None, "required": required}
    if param.choices:
        kwargs["metavar"] = "{" + ",".join(param.choices) + "}"  # the spec checks the value (did you mean)
    elif param.kind in (int, float):
        kwargs["type"] = param.kind
        kwargs["metavar"] = "N" if param.kind is int else "X"
    shown = param.default not in (MISSING, None)  # a null default is explained by the doc
    help_text = param.doc + (f" (default: {json.dumps(param.default)})" if shown else "")
    parser.add_argument(*flags, help=help_text.replace("%", "%%"), **kwargs)


class _Parser(argparse.ArgumentParser):
    """argparse, with an error in one line (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The wan-generate argument parser (official flags first, then aliases and extensions)."""
    p = _Parser(
        prog=PROG,
        description="Generate a video with Wan2.2-I2V-A14B (or the tiny preset) from an image and a prompt.",
    )
    # Defaults are None so a configuration file can fill what the command line leaves out.
    p.add_argument("--task", default="i2v-A14B", help="only i2v-A14B is supported")
    p.add_argument("--ckpt_dir", type=Path, default=None, help="checkpoint folder (official or Diffusers layout)")
    p.add_argument("--image", required=True, help="input image (PNG/JPEG)")
    for flags, name in PARAM_FLAGS:
        add_param_flag(p, flags, name, required=name == "prompt")
    p.add_argument("--sample_guide_scale", "--guidance_scale", dest="sample_guide_scale", default=None,
                   help="one value for both experts, or LOW,HIGH as the official tuple order (default: "
                        f"{spec.lookup('guide_scale_low').default},{spec.lookup('guide_scale_high').default})")
    p.add_argument("--offload_model", type=_bool, default=None,
                   help="True: only the active expert on the GPU, T5 back to CPU after encoding "
                        "(default True on a GPU, as upstream on one GPU)")
    p.add_argument("--convert_model_dtype", action="store_true", help="run the experts in bf16 (default fp32)")
    p.add_argument("--t5_cpu", action="store_true", help="run the text encoder on the CPU")
    for flag, name in SWITCHES:
        p.add_argument(flag, dest=name, action="store_true", help=spec.lookup(name).doc + " (under torchrun)")
    p.add_argument("--save_file", type=Path, default=None, help="output mp4 (default: a name from the prompt)")
    p.add_argument("--single_expert", action="store_true", help="the low-noise expert for every step")
    p.add_argument("--enable_refiner", action="store_true",
                   help="480p pass, upscale, re-noise, finish at the target with the low-noise expert")
    p.add_argument("--config", type=Path, default=None, help="configuration.json (flags win over it)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="a14b")
    p.add_argument("--weights", choices=["synthetic"], default=None,
                   help="synthetic: seeded random weights at the real shapes, no checkpoint needed")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--fp8", action="store_true",
                   help="store the experts' block weights as scaled fp8 (e4m3), compute in bf16")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error")
    return p


@dataclass
class Invocation:
    """What a wan-generate command line resolves to."""

    source: str | Path
    preset: str
    device: str
    memory: MemoryPlan
    load: LoadOptions
    request: GenerationRequest
    save_file: Path
    compute: ComputePlan = field(default_factory=ComputePlan)
    parallel: ParallelPlan | None = None  # None: a single process, not started by torchrun
    rank: int = 0


def resolve(args: argparse.Namespace) -> Invocation:
    """Combine flags, configuration file and defaults; check every value against the parameter spec.

    torch is imported (on a CUDA build) only to see whether there is a GPU, once every value has passed.
    """
    if args.task != "i2v-A14B":
        raise ConfigError(f"--task {args.task!r} is not supported; this runtime implements i2v-A14B only")
    if (args.ckpt_dir is None) == (args.weights is None):
        raise ConfigError("give exactly one of --ckpt_dir DIR (a checkpoint) or --weights synthetic")
    if args.enable_refiner and args.single_expert:
        raise ConfigError("--enable_refiner and --single_expert exclude each other; pick one")
    if args.device is not None:
        _named("--device", spec.check_device_name, args.device)
    conf = read_configuration(args.config) if args.config else ConfigurationFile()
    if conf.vae.compression_ratio is not None and conf.vae.compression_ratio != "4x16x16":
        raise ConfigError(
            f"--config vae.compression_ratio {conf.vae.compression_ratio!r}: this model's VAE + patching "
            "compresses 4x16x16 (time x height x width); set it to \"4x16x16\" or remove the key"
        )

    given: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def put(name: str, value: Any, source: str) -> None:  # the first source to give a value wins
        if value is not None and name not in given:
            given[name], sources[name] = value, source

    for flags, name in PARAM_FLAGS:
        put(name, getattr(args, name), flags[0])
    for flag, name in SWITCHES:
        put(name, True if getattr(args, name) else None, flag)
    if args.sample_guide_scale is not None:
        low, high = _guidance(args.sample_guide_scale)
        put("guide_scale_low", low, "--sample_guide_scale")
        put("guide_scale_high", high, "--sample_guide_scale")
    put("mode", "refine" if args.enable_refiner else None, "--enable_refiner")
    put("mode", "single_expert" if args.single_expert else None, "--single_expert")
    for name, value, key in (
        ("size", conf.resolution.target, "resolution.target"),
        ("refine.scale_factor", conf.resolution.scale_factor, "resolution.scale_factor"),
        ("refine.anti_aliasing", conf.resolution.anti_aliasing, "resolution.anti_aliasing"),
        ("output_anti_aliasing", conf.resolution.anti_aliasing, "resolution.anti_aliasing"),
        ("vae_tiling", conf.vae.tile_size, "vae.tile_size"),
        ("steps", conf.diffusion.num_inference_steps, "diffusion.num_inference_steps"),
        ("guide_scale_low", conf.diffusion.guidance_scale, "diffusion.guidance_scale"),
        ("guide_scale_high", conf.diffusion.guidance_scale, "diffusion.guidance_scale"),
    ):
        put(name, value, f"--config {key}")
    put("weight_dtype", "fp8" if args.fp8 else ("bf16" if args.convert_model_dtype else "fp32"), "--fp8")

    offload = args.offload_model
    if offload is None and given.get("dit_blocks") == "stream":
        offload = True
    # Upstream offloads on a GPU. Whether the default device is one may need torch, so every value is
    # checked first with offloading assumed (the plan's rules hold either way) and the plan settled after.
    values = _named_by(sources, spec.validate, given | _offload_values(args, offload is not False))
    device = args.device
    if device is None:
        device = "cuda" if _cuda_available() else "cpu"
    else:
        _check_cuda(device)
    launch = LaunchEnv.read()  # torchrun's ranks; a single process is rank 0 of 1
    if device.startswith("cuda") and launch.torchrun:
        device = f"cuda:{launch.local_rank}"  # each rank on its own GPU
    if offload is None:  # as upstream: offload on one GPU, not when several GPUs share the work
        values |= _offload_values(args, device.startswith("cuda") and launch.world_size == 1)

    request = spec.build(GenerationRequest, values, image=args.image)
    memory, compute = spec.build(MemoryPlan, values), spec.build(ComputePlan, values)
    compute.check_memory(memory)
    parallel = spec.build(ParallelPlan, values)
    check_launch(parallel, memory, PRESETS[args.preset].dit.num_heads, launch.world_size, launch.local_world_size,
                 _gpu_count() if device.startswith("cuda") else None)
    check_guidance(parallel, [request.guide_scale_high, request.guide_scale_low])
    save = args.save_file or Path(f"{args.task}_{request.size.replace('*', 'x')}_{_slug(request.prompt)}.mp4")
    source = "synthetic" if args.weights else args.ckpt_dir
    return Invocation(source, args.preset, device, memory, spec.build(LoadOptions, values), request, save, compute,
                      parallel if launch.torchrun else None, launch.rank)


def _offload_values(args: argparse.Namespace, offload: bool) -> dict[str, str]:
    """The plan fields the official --offload_model and --t5_cpu stand for."""
    return {
        "experts": "swap" if offload else "resident",
        "text_encoder": "cpu" if args.t5_cpu else ("offload_after" if offload else "gpu"),
    }


def _named(source: str, check: Callable[..., Any], *args: Any) -> Any:
    """`check(*args)`, its ConfigError prefixed with the flag or key the value came from."""
    try:
        return check(*args)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _named_by(sources: dict[str, str], check: Callable[..., Any], *args: Any) -> Any:
    """`check(*args)`; a ParameterError is prefixed with the flag or configuration key that set the value."""
    try:
        return check(*args)
    except ParameterError as exc:
        if exc.key in sources:
            raise ParameterError(exc.key, f"{sources[exc.key]}: {exc}") from None
        raise


def _cpu_build_of_torch() -> bool:
    """True when the installed torch is a CPU-only build (version tag `+cpu`): no CUDA, no import needed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch").endswith("+cpu")
    except PackageNotFoundError:
        return False


def _cuda_available() -> bool:
    if _cpu_build_of_torch():  # answers without importing torch (seconds)
        return False
    import torch

    return torch.cuda.is_available()


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def _check_cuda(device: str) -> None:
    """Refuse a CUDA device this machine does not have, naming the way out."""
    if device.startswith("cuda") and not _cuda_available():
        from importlib.metadata import version

        raise ConfigError(f"--device {device}: this torch ({version('torch')}) sees no CUDA device; run on the "
                          "CPU with --device cpu (the tiny preset fits: --preset tiny --weights synthetic), or "
                          "install a CUDA build of torch")


def _guidance(flag: str) -> tuple[float, float]:
    """--sample_guide_scale: one number for both experts, or LOW,HIGH."""
    parts = [p for p in flag.replace(" ", "").split(",") if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
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

    device: Any  # torch.device
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
            import torch

            torch.cuda.synchronize(self.device)


def preflight(inv: Invocation) -> None:
    """Before anything loads: the output path, the picture, sizes and frames, the memory of the load and the request.

    The memory floors are those of one process holding the whole plan; a rank of several holds a share.
    """
    from wan_runtime.resources import check_before_load, open_request
    from wan_runtime.video_io import check_output_path

    check_output_path(inv.save_file)
    if inv.parallel is None or inv.parallel.world_size(inv.memory) == 1:
        check_before_load(inv.request, inv.source, inv.preset, inv.device, inv.memory, inv.compute.exact_last_blocks)
    else:
        open_request(inv.request, PRESETS[inv.preset])


def prepare(inv: Invocation) -> Any:
    """Import torch, set its threads (before any work, so timings say what ran) and check the device."""
    from wan_runtime.threads import apply_threads
    from wan_runtime.weights import resolve_device

    apply_threads(inv.load.threads)
    return resolve_device(inv.device)


def generate(inv: Invocation, device: Any, quiet: bool = False) -> int:
    """Load the model, generate, write the mp4 and print the summary (everything already checked)."""
    import torch

    from wan_runtime.parallel.launch import shutdown
    from wan_runtime.pipeline import WanI2V
    from wan_runtime.video_io import write_mp4

    obs = ConsoleObserver(device, show_progress=not quiet and inv.rank == 0)
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        pipe = WanI2V.load(inv.source, inv.preset, device, inv.memory, inv.load.attention, observer=obs,
                           cross_attention=inv.load.cross_attention, compute=inv.compute, parallel=inv.parallel)
        result = pipe.generate(inv.request, observer=obs)
        pipe.close()
        shutdown()  # the process group of a torchrun rank (nothing in a single process)
        if not pipe.is_output_rank:
            return 0  # rank 0 writes the video and prints the summary
        path = write_mp4(result.frames, inv.save_file, fps=pipe.cfg.fps)
    finally:
        obs.close()  # never leave a progress bar over an error message
    geo = result.geometry
    print(f"saved {path} ({geo.width}x{geo.height}, {result.frames.shape[0]} frames, {pipe.cfg.fps} fps)")
    print(f"seed {result.seed}  (repeat with --base_seed {result.seed})")
    print(f"steps: {result.steps_high} high-noise + {result.steps_low} low-noise; tokens {geo.tokens}")
    for name, seconds in obs.stage_s.items():
        print(f"  {name:<13} {seconds:9.3f} s")
    print(f"  {'total':<13} {sum(v for k, v in obs.stage_s.items() if k != 'load'):9.3f} s (without load)")
    print(f"cpu: {torch.get_num_threads()} threads ({torch.get_num_interop_threads()} inter-op), "
          f"host load {_load_average()} over {os.cpu_count()} cores")
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        reserved = torch.cuda.max_memory_reserved(device) / 2**30
        print(f"peak GPU memory: {peak:.2f} GiB allocated, {reserved:.2f} GiB reserved")
        if pipe.vram_budget is not None:
            print(pipe.vram_budget.describe())
    else:
        print("peak GPU memory: n/a (ran on the CPU)")
    return 0


def _load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    """Entry point of `wan-generate`: validate everything, then load and generate."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        inv = resolve(args)  # every argument, against the parameter spec: no torch yet
        device = prepare(inv)  # torch from here: threads set, the device there
        preflight(inv)  # the picture, the output path and the memory, before anything loads
        return generate(inv, device, quiet=args.quiet)
    except WanError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        cause = " ".join(str(exc).split())[:300] or "(no message)"
        print(f"{PROG}: unexpected {type(exc).__name__}: {cause}; rerun with --debug for the traceback",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
