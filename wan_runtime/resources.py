"""Memory a load and a request need on the device and in host memory, checked before anything is allocated.

The estimate is a *floor*: what certainly has to be held at a stage's peak, never a guess at the
whole. A load or a request is refused only when its floor exceeds what this machine has free, so a
refusal is an out-of-memory known in advance (it is raised as an `InsufficientMemoryError`, a kind
of `StageOutOfMemoryError` naming the first stage that cannot fit), and nothing that fits is turned
away. What the floor counts:
- weights, exactly: the DiT and the VAE are built on the `meta` device (no memory) and their
  tensors counted in the dtype the memory plan gives them (fp8 blocks: one byte per weight plus the
  bf16 biases and fp32 scales); umT5 is counted from its shape (building it would import
  transformers); each where the plan places it at each stage (experts.py, pipeline.py): A14B in
  bf16 is 26.6 GiB per expert, 10.6 GiB of umT5, 0.24 GiB of VAE;
- tensors whose size follows from the request: the fp32 conditioning clip and its copy in the VAE's
  dtype, the decoded fp32 video and one fp32 temporary of it, the uint8 frames, the picture;
- activations, calibrated from the H100 runs in baselines/h100-a14b (peak allocated per stage) and
  set about 8% below the lowest of them, so the floor stays under every measured peak:
    DiT forward: K_DIT bytes per token per model dim (measured 29.3-30.6 at 7,800-75,600 tokens,
      bf16 compute; fp32 compute needs more, so the bf16 figure stays a floor);
    VAE encode / decode: K_VAE_ENCODE / K_VAE_DECODE bytes per pixel per base channel per element
      byte (measured 48.7-49.3 and 59.3-60.2, fp32 and bf16, 480p and 720p, untiled and 256 px tiles),
      for the 4-frame chunk the causal VAE works on (a 1-frame clip counts a quarter of it).
  The text encoder's activations (~0.1 GiB for 2 x 512 tokens) and the CUDA context are not counted.
tests/test_resources.py checks the floor against every measured row of those runs.

What the machine has: on a CUDA device, `torch.cuda.mem_get_info` free plus the blocks torch holds
cached, within a `vram_budget_gib` cap when the plan sets one; in host memory, `MemAvailable` of
/proc/meminfo, within the cgroup's limit (v2 or v1) when one is set. Where a figure cannot be read
(another OS), that side is not checked. On the CPU every tensor is host memory; on MPS (unified
memory) the host figure stands for both.

A refusal names a memory plan that would fit (the closest: fewest changed fields, lossless changes
before lossy ones), else a smaller request (frames, size) or the tiny preset.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from wan_runtime.config import DiTConfig, ModelConfig, T5Config, VAEConfig
from wan_runtime.errors import ConfigError, InsufficientMemoryError
from wan_runtime.images import load_image
from wan_runtime.memory import MemoryPlan, torch_dtypes
from wan_runtime.request import GenerationRequest
from wan_runtime.sizes import VideoGeometry, geometry, parse_size

if TYPE_CHECKING:
    from PIL import Image

GIB = 2**30

# Activation floors (see the module docstring for the measurements behind them).
K_DIT = 27  # bytes per token per DiT model dim, for one CFG forward and the latents around it
K_VAE_ENCODE = 45  # bytes per pixel per VAE base channel per element byte, one 4-frame chunk
K_VAE_DECODE = 55

_LOSSY_FIELDS = ("weight_dtype", "vae_dtype", "vae_tiling")  # change the video; the others only move memory


# ---------------------------------------------------------------------------------------------- parts
@dataclass(frozen=True)
class Part:
    """One named amount of memory held at a stage's peak."""

    what: str
    nbytes: int


@dataclass(frozen=True)
class StageNeed:
    """The memory floor of one stage: what is on the device and in host memory at its peak."""

    stage: str
    device: tuple[Part, ...] = ()
    host: tuple[Part, ...] = ()

    @property
    def device_bytes(self) -> int:
        """Sum of the device parts."""
        return sum(p.nbytes for p in self.device)

    @property
    def host_bytes(self) -> int:
        """Sum of the host parts."""
        return sum(p.nbytes for p in self.host)

    def plus(self, other: "StageNeed") -> "StageNeed":
        """This stage's parts with `other`'s added (e.g. what a loaded pipeline holds at rest)."""
        return StageNeed(self.stage, other.device + self.device, other.host + self.host)


@dataclass(frozen=True)
class Capacity:
    """Memory free on this machine now, in bytes; None where it cannot be read (that side is not checked)."""

    device_bytes: int | None
    host_bytes: int | None


@dataclass(frozen=True)
class RequestShape:
    """What of a request decides its memory: sizes, frames, the picture's aspect, the mode."""

    size: str
    frames: int
    image_width: int
    image_height: int
    mode: str = "both"
    first_size: str | None = None  # refine mode: the size of the first pass
    output_size: tuple[int, int] | None = None
    size_rule: str = "exact"

    @classmethod
    def of(cls, request: GenerationRequest, image_width: int, image_height: int) -> "RequestShape":
        """The shape of `request` for a picture of the given size."""
        return cls(request.size, request.frames, image_width, image_height, request.mode,
                   request.refine.first_size if request.mode == "refine" else None,
                   request.output_size, request.size_rule)

    def geometries(self, cfg: ModelConfig) -> list[VideoGeometry]:
        """The geometry of every pass (refine: the first pass, then the target)."""
        sizes = [self.first_size, self.size] if self.first_size else [self.size]
        return [geometry(s, self.frames, self.image_width, self.image_height, cfg.vae_stride, cfg.patch_size,
                         self.size_rule) for s in sizes]


# ---------------------------------------------------------------------------------------------- weights
def _dtype_bytes(name: str) -> int:
    return torch_dtypes()[name].itemsize


def _tensor_bytes(module: torch.nn.Module, dtype: torch.dtype) -> int:
    """Bytes of every parameter and buffer of a meta module once stored as the loaders store them in `dtype`."""
    from wan_runtime.weights.loader import target_dtype

    total = 0
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.dtype == torch.float8_e4m3fn or not tensor.dtype.is_floating_point:
            size = tensor.element_size()
        elif name.endswith("weight_scale"):  # fp8 scales stay fp32
            size = 4
        else:
            size = target_dtype(module, name, tensor.dtype, dtype).itemsize
        total += tensor.numel() * size
    return total


@lru_cache(maxsize=None)
def expert_bytes(dit: DiTConfig, weight_dtype: str) -> tuple[int, int]:
    """(bytes of everything but the blocks, bytes of one block) of one expert stored as `weight_dtype`."""
    from wan_runtime.fp8 import quantize_linears
    from wan_runtime.modules.dit import WanBlock, WanDiT

    compute = torch_dtypes()["bf16" if weight_dtype == "fp8" else weight_dtype]
    with torch.device("meta"):
        model = WanDiT(dit)
        block = WanBlock(dit)
    if weight_dtype == "fp8":
        quantize_linears(block)
    whole = _tensor_bytes(model, compute)
    one_block = _tensor_bytes(model.blocks[0], compute)
    return whole - dit.num_layers * one_block, _tensor_bytes(block, compute)


def text_encoder_bytes(t5: T5Config, dtype: str) -> int:
    """Bytes of the umT5 encoder in `dtype`, counted from its shape (building it would import transformers).

    Token embedding; per layer q, k, v, o, a relative-position bias of its own, a gated feed-forward
    (wi_0, wi_1, wo) and two norms; a final norm; no biases. Under fp16 `wo` stays fp32, as the
    loader keeps it (tests/test_resources.py checks this against the built model).
    """
    wo = t5.dim_ffn * t5.dim
    per_layer = 4 * t5.dim * t5.dim_attn + t5.num_buckets * t5.num_heads + 2 * t5.dim + 2 * t5.dim * t5.dim_ffn + wo
    total = t5.vocab * t5.dim + t5.num_layers * per_layer + t5.dim
    size = _dtype_bytes(dtype)
    kept_fp32 = t5.num_layers * wo if dtype == "fp16" else 0
    return (total - kept_fp32) * size + kept_fp32 * 4


@lru_cache(maxsize=None)
def vae_bytes(vae: VAEConfig, dtype: str) -> int:
    """Bytes of the VAE in `dtype`."""
    from wan_runtime.modules.vae import WanVAE

    with torch.device("meta"):
        model = WanVAE(vae)
    return _tensor_bytes(model, torch_dtypes()[dtype])


def _expert_total(cfg: ModelConfig, weight_dtype: str, exact_blocks: int = 0) -> int:
    """Bytes of one expert; under fp8 storage its last `exact_blocks` blocks stay bf16 (ComputePlan.exact_last_blocks)."""
    rest, block = expert_bytes(cfg.dit, weight_dtype)
    exact = min(exact_blocks, cfg.dit.num_layers) if weight_dtype == "fp8" else 0
    return rest + (cfg.dit.num_layers - exact) * block + exact * expert_bytes(cfg.dit, "bf16")[1]


# ---------------------------------------------------------------------------------------------- the load
def _where(plan: MemoryPlan, device: torch.device) -> str:
    """How the experts are kept: resident (on the device), parked (host, one comes in), stream (host, a ring)."""
    if plan.dit_blocks == "stream":
        return "stream"
    if plan.experts == "resident" or device.type != "cuda":
        return "resident"
    return "parked"


def _describe_plan(cfg: ModelConfig, plan: MemoryPlan, device: torch.device) -> str:
    if device.type != "cuda":
        return f"{cfg.name} with {plan.weight_dtype} weights on the {device.type.upper()}"
    where = f"experts={plan.experts}, dit_blocks={plan.dit_blocks}, text_encoder={plan.text_encoder}"
    if plan.experts == "swap":
        where += f", host_memory={plan.host_memory}"
    return f"{cfg.name} with {plan.weight_dtype} weights under {where}"


def resting_need(cfg: ModelConfig, plan: MemoryPlan, device: torch.device, exact_blocks: int = 0) -> StageNeed:
    """What a loaded pipeline holds between requests (stage "load", without the loading transients).

    `exact_blocks`: blocks per expert kept in bf16 under fp8 storage (ComputePlan.exact_last_blocks).
    """
    expert = _expert_total(cfg, plan.weight_dtype, exact_blocks)
    te = text_encoder_bytes(cfg.t5, plan.load_dtype)
    vae = vae_bytes(cfg.vae, plan.vae_dtype)
    dev, host = [Part(f"VAE ({plan.vae_dtype})", vae)], []
    experts = Part(f"2 DiT experts ({plan.weight_dtype}, {expert / GIB:.1f} GiB each)", 2 * expert)
    if _where(plan, device) == "resident":
        dev.append(experts)
    else:
        host.append(replace(experts, what=f"{experts.what} parked in {plan.host_memory} host memory"))
    if plan.text_encoder == "gpu":
        dev.append(Part(f"umT5 text encoder ({plan.load_dtype})", te))
    else:
        host.append(Part(f"umT5 text encoder ({plan.load_dtype}) in host memory", te))
    return _placed(StageNeed("load", tuple(dev), tuple(host)), device)


def load_need(cfg: ModelConfig, plan: MemoryPlan, device: torch.device, checkpoint: bool = False,
              exact_blocks: int = 0) -> StageNeed:
    """The floor of the `load` stage: what rests after it, plus the loading transients where they are larger."""
    rest = resting_need(cfg, plan, device, exact_blocks)
    device_parts, host_parts = rest.device, rest.host
    te = text_encoder_bytes(cfg.t5, plan.load_dtype)
    if plan.text_encoder == "offload_after" and device.type == "cuda" and te > rest.device_bytes:
        # the text encoder is built on the device, then parked, before anything else arrives
        device_parts = (Part(f"umT5 text encoder ({plan.load_dtype}) built on the device", te),)
    on_device = _where(plan, device) == "resident" and device.type == "cuda"
    if checkpoint and not (on_device and plan.weight_dtype != "fp8"):
        # A checkpoint's expert is read whole into host memory in the load dtype, then converted and
        # placed part by part; while the second is read, the first is in its final place already.
        read = _expert_total(cfg, plan.load_dtype)
        extra = read - (0 if on_device else _expert_total(cfg, plan.weight_dtype, exact_blocks))
        if extra > 0:
            host_parts += (Part(f"an expert read from the checkpoint in {plan.load_dtype} before conversion", extra),)
    return _placed(StageNeed("load", device_parts, host_parts), device)


# ---------------------------------------------------------------------------------------------- a request
def request_needs(cfg: ModelConfig, plan: MemoryPlan, device: torch.device, shape: RequestShape,
                  exact_blocks: int = 0) -> list[StageNeed]:
    """The floor of each stage of a request, over what the loaded pipeline holds at rest, in run order."""
    geos = shape.geometries(cfg)
    vae_elem = _dtype_bytes(plan.vae_dtype)
    te = text_encoder_bytes(cfg.t5, plan.load_dtype)
    rest, block = expert_bytes(cfg.dit, plan.weight_dtype)
    where = _where(plan, device)

    text = [Part("umT5 text encoder brought in", te)] if plan.text_encoder == "offload_after" \
        and device.type == "cuda" else []
    if where == "parked":
        active = [Part(f"the active expert ({plan.weight_dtype})", _expert_total(cfg, plan.weight_dtype, exact_blocks))]
    elif where == "stream":
        slots = plan.prefetch_blocks + 1
        active = [Part(f"the streamed expert's non-block weights and a ring of {slots} blocks", rest + slots * block)]
    else:
        active = []

    needs: dict[str, StageNeed] = {}

    def worst(stage: str, dev: list[Part], host: list[Part]) -> None:
        candidate = _placed(StageNeed(stage, tuple(dev), tuple(host)), device)
        old = needs.get(stage)
        if old is None or (candidate.device_bytes, candidate.host_bytes) > (old.device_bytes, old.host_bytes):
            needs[stage] = candidate

    worst("text_encode", text, [])
    for geo in geos:
        pixels = geo.frames * geo.height * geo.width
        chunk = 1 if geo.frames == 1 else 4
        tile = plan.vae_tiling
        plane = (min(tile, geo.height) * min(tile, geo.width)) if tile else geo.height * geo.width
        latent = cfg.vae.z_dim * geo.lat_frames * geo.lat_height * geo.lat_width * 4
        what = f"{geo.frames} frames at {geo.width}x{geo.height}"
        clip = [Part(f"conditioning clip, fp32 ({what})", 3 * pixels * 4),
                Part("picture, fp32", 3 * geo.height * geo.width * 4)]
        encode = [Part("VAE encoder activations", K_VAE_ENCODE * cfg.vae.dim * plane * vae_elem * chunk // 4),
                  Part("image latent", latent)]
        if device.type == "cuda" or plan.vae_dtype != "fp32":  # else the VAE reads the fp32 clip itself
            encode.append(Part(f"conditioning clip in the VAE's {plan.vae_dtype} ({what})", 3 * pixels * vae_elem))
        worst("image_encode", encode, clip)
        worst("denoise", active + [
            Part(f"DiT activations ({geo.tokens:,} tokens)", K_DIT * geo.tokens * cfg.dit.dim),
            Part("latents", 3 * latent),
        ], [])
        video = Part(f"decoded video, fp32 ({what})", 3 * pixels * 4)
        worst("vae_decode", [
            video, Part("VAE decoder activations", K_VAE_DECODE * cfg.vae.dim * plane * vae_elem * chunk // 4),
        ], [])
        out_w, out_h = shape.output_size or (geo.width, geo.height)
        out_pixels = geo.frames * out_h * out_w
        worst("postprocess", [video, Part("an fp32 temporary of the video", 3 * out_pixels * 4)],
              [Part(f"uint8 frames ({geo.frames} x {out_w}x{out_h})", 3 * out_pixels)])
    denoise = "denoise_low" if shape.mode in ("single_expert", "refine") else "denoise_high"
    order = ["text_encode", "image_encode", "denoise", "vae_decode", "postprocess"]
    return [replace(needs[s], stage=denoise if s == "denoise" else s) for s in order]


def _placed(need: StageNeed, device: torch.device) -> StageNeed:
    """On a CPU (or MPS, unified memory) device every part is host memory."""
    if device.type == "cuda":
        return need
    return StageNeed(need.stage, (), need.host + need.device)


# ---------------------------------------------------------------------------------------------- the machine
def host_available_bytes() -> int | None:
    """Host memory available to this process: MemAvailable, within a cgroup limit; None when unknown."""
    available = _meminfo_available()
    limit = _cgroup_room()
    if available is None:
        return limit
    return available if limit is None else min(available, limit)


MEMINFO = Path("/proc/meminfo")
# (limit, usage, statistics key of reclaimable page cache) of cgroup v2, then v1, as seen from inside.
CGROUP_FILES: tuple[tuple[Path, Path, str], ...] = (
    (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current"), "inactive_file"),
    (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"), Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
     "total_inactive_file"),
)


def _meminfo_available() -> int | None:
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """The cgroup's memory limit minus what it uses (reclaimable page cache not counted), or None without a limit."""
    for limit_file, usage_file, inactive_key in CGROUP_FILES:
        try:
            raw = limit_file.read_text().strip()
            if raw == "max" or int(raw) >= 2**60:  # no limit (v1 writes a huge number)
                return None
            limit, usage = int(raw), int(usage_file.read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            stat = limit_file.with_name("memory.stat").read_text().split()
            inactive = int(dict(zip(stat[::2], stat[1::2])).get(inactive_key, 0))
        except (OSError, ValueError):
            inactive = 0
        return max(0, limit - usage + inactive)
    return None


def device_available_bytes(device: torch.device, cap_bytes: int | None = None) -> int | None:
    """Bytes torch can still allocate on a CUDA device (free + its cached blocks, within `cap_bytes`), else None."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(device)
    allocated = torch.cuda.memory_allocated(device)
    available = free + torch.cuda.memory_reserved(device) - allocated
    if cap_bytes is not None:
        available = min(available, cap_bytes - allocated)
    return max(0, available)


def capacity(device: torch.device | str, cap_bytes: int | None = None) -> Capacity:
    """What this machine has free now for a run on `device`."""
    device = torch.device(device)
    return Capacity(device_available_bytes(device, cap_bytes), host_available_bytes())


# ---------------------------------------------------------------------------------------------- checks
def open_request(request: GenerationRequest, cfg: ModelConfig) -> tuple["Image.Image", RequestShape]:
    """The request's picture (8-bit RGB) and its shape; sizes and frames are checked here, before any work."""
    image = load_image(request.image)
    shape = RequestShape.of(request, image.width, image.height)
    shape.geometries(cfg)
    return image, shape


def check_before_load(request: GenerationRequest, source: str | Path = "synthetic", preset: str | ModelConfig = "tiny",
                      device: str | torch.device = "cpu", memory: MemoryPlan | None = None,
                      exact_blocks: int = 0) -> None:
    """Before loading: the picture decodes, sizes and frames are valid, a load plus this request fit this machine.

    What wan-generate calls first (with the output path check); it imports no network code, so a
    refusal comes before torch's model libraries load.
    """
    from wan_runtime.config import get_preset
    from wan_runtime.weights import resolve_device

    cfg = get_preset(preset) if isinstance(preset, str) else preset
    device = resolve_device(device)
    _, shape = open_request(request, cfg)
    synthetic = isinstance(source, str) and source == "synthetic"
    check_run(cfg, memory or MemoryPlan(), device, shape, checkpoint=not synthetic, exact_blocks=exact_blocks)


def check_load(cfg: ModelConfig, plan: MemoryPlan, device: torch.device | str, checkpoint: bool = False,
               have: Capacity | None = None, exact_blocks: int = 0) -> None:
    """Refuse a load whose floor does not fit this machine (InsufficientMemoryError naming a plan that fits)."""
    device = torch.device(device)
    have = have or capacity(device, _budget_bytes(plan))
    need = load_need(cfg, plan, device, checkpoint, exact_blocks)
    short = _shortfall([need], have)
    if short is None:
        return
    stage, side, nbytes, parts = short
    hint = _plan_hint(cfg, plan, device, have, lambda p: [load_need(cfg, p, device, checkpoint, exact_blocks)],
                      exact_blocks)
    _refuse(stage, side, nbytes, have, parts, f"loading {_describe_plan(cfg, plan, device)}", hint or _preset_hint(cfg))


def check_request(cfg: ModelConfig, plan: MemoryPlan, device: torch.device | str, shape: RequestShape,
                  have: Capacity | None = None, exact_blocks: int = 0) -> None:
    """Refuse a request whose floor, over what the loaded pipeline holds, does not fit what is free now."""
    device = torch.device(device)
    have = have or capacity(device, _budget_bytes(plan))
    short = _shortfall(request_needs(cfg, plan, device, shape, exact_blocks), have)
    if short is None:
        return
    stage, side, nbytes, parts = short
    hint = _request_hint(cfg, plan, device, shape, have, lambda s: request_needs(cfg, plan, device, s, exact_blocks))
    _refuse(stage, side, nbytes, have, parts, f"this request ({_describe_request(shape)})",
            hint or "no smaller request fits either: free memory on this machine")


def check_run(cfg: ModelConfig, plan: MemoryPlan, device: torch.device | str, shape: RequestShape,
              checkpoint: bool = False, have: Capacity | None = None, exact_blocks: int = 0) -> None:
    """Refuse a load plus one request that cannot fit this machine now (wan-generate calls it before loading)."""
    device = torch.device(device)
    have = have or capacity(device, _budget_bytes(plan))

    def needs(p: MemoryPlan, s: RequestShape) -> list[StageNeed]:
        rest = resting_need(cfg, p, device, exact_blocks)
        return [load_need(cfg, p, device, checkpoint, exact_blocks)] + \
            [n.plus(rest) for n in request_needs(cfg, p, device, s, exact_blocks)]

    short = _shortfall(needs(plan, shape), have)
    if short is None:
        return
    stage, side, nbytes, parts = short
    what = f"{_describe_plan(cfg, plan, device)} and {_describe_request(shape)}"
    hint = (_plan_hint(cfg, plan, device, have, lambda p: needs(p, shape), exact_blocks)
            or _request_hint(cfg, plan, device, shape, have, lambda s: needs(plan, s))
            or _preset_hint(cfg))
    _refuse(stage, side, nbytes, have, parts, what, hint)


def _budget_bytes(plan: MemoryPlan) -> int | None:
    return None if plan.vram_budget_gib is None else int(plan.vram_budget_gib * GIB)


def _shortfall(needs: list[StageNeed], have: Capacity) -> tuple[str, str, int, tuple[Part, ...]] | None:
    """(stage, "device"|"host", bytes needed, parts) of the first stage that does not fit, or None."""
    for need in needs:
        if have.device_bytes is not None and need.device_bytes > have.device_bytes:
            return need.stage, "device", need.device_bytes, need.device
        if have.host_bytes is not None and need.host_bytes > have.host_bytes:
            return need.stage, "host", need.host_bytes, need.host
    return None


def _fits(needs: list[StageNeed], have: Capacity) -> bool:
    return _shortfall(needs, have) is None


def _refuse(stage: str, side: str, nbytes: int, have: Capacity, parts: tuple[Part, ...], what: str,
            hint: str) -> None:
    available = have.device_bytes if side == "device" else have.host_bytes
    memory = "GPU memory" if side == "device" else "host memory"
    shown = [p for p in sorted(parts, key=lambda p: -p.nbytes)[:3] if p.nbytes >= nbytes / 100]
    largest = ", ".join(f"{p.what} {_gib(p.nbytes)}" for p in shown)
    raise InsufficientMemoryError(
        stage,
        f"not enough {memory}: {what} needs at least {_gib(nbytes)} of {memory} in stage {stage!r} "
        f"({largest}); this machine has {_gib(available)} available. {hint}",
        side, nbytes, available,
    )


def _gib(nbytes: int) -> str:
    gib = nbytes / GIB
    return f"{gib:,.0f} GiB" if gib >= 100 else f"{gib:.1f} GiB"


def _describe_request(shape: RequestShape) -> str:
    return f"{shape.frames} frames at size {shape.size}" + (f", mode {shape.mode}" if shape.mode != "both" else "")


# ---------------------------------------------------------------------------------------------- what would fit
def alternative_plans(plan: MemoryPlan, device: torch.device) -> list[MemoryPlan]:
    """Valid plans that differ from `plan` in placement, precision or VAE tiling, closest first."""
    cuda = device.type == "cuda"
    dtypes = [plan.weight_dtype] + [d for d in ("bf16", "fp8") if d != plan.weight_dtype
                                    and (plan.weight_dtype == "fp32" or d == "fp8")]
    options = product(
        ("resident", "swap") if cuda else (plan.experts,),
        ("resident", "stream") if cuda else (plan.dit_blocks,),
        dtypes,
        ("gpu", "offload_after", "cpu") if cuda else (plan.text_encoder,),
        ("pinned", "pageable") if cuda else (plan.host_memory,),
        (plan.vae_dtype, "bf16"),
        (plan.vae_tiling, 256) if plan.vae_tiling is None else (plan.vae_tiling,),
    )
    plans = []
    for experts, blocks, dtype, text, host, vae_dtype, tiling in options:
        try:
            plans.append(replace(plan, experts=experts, dit_blocks=blocks, weight_dtype=dtype, text_encoder=text,
                                 host_memory=host, vae_dtype=vae_dtype, vae_tiling=tiling))
        except ConfigError:  # e.g. stream without swap
            continue
    plans = [p for p in dict.fromkeys(plans) if p != plan]
    return sorted(plans, key=lambda p: (len(_lossy(plan, p)), len(_changes(plan, p))))


def _changes(old: MemoryPlan, new: MemoryPlan) -> dict[str, object]:
    return {k: v for k, v in new.to_dict().items() if old.to_dict()[k] != v}


def _lossy(old: MemoryPlan, new: MemoryPlan) -> list[str]:
    return [k for k in _changes(old, new) if k in _LOSSY_FIELDS]


def _plan_hint(cfg: ModelConfig, plan: MemoryPlan, device: torch.device, have: Capacity, needs,
               exact_blocks: int = 0) -> str | None:
    for other in alternative_plans(plan, device):
        if exact_blocks and other.dit_blocks == "stream":  # streaming takes one block layout (ComputePlan)
            continue
        if _fits(needs(other), have):
            changes = ", ".join(f"{k}={v}" for k, v in _changes(plan, other).items())
            return f"A memory plan that fits: {changes}."
    return None


def _request_hint(cfg: ModelConfig, plan: MemoryPlan, device: torch.device, shape: RequestShape, have: Capacity,
                  needs) -> str | None:
    hints = []
    lo, hi = 0, (shape.frames - 1) // 4 - 1  # the largest n with 4n+1 frames that fits, below the request
    if hi >= 0 and _fits(needs(replace(shape, frames=1)), have):
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if _fits(needs(replace(shape, frames=4 * mid + 1)), have) else (lo, mid - 1)
        hints.append(f"at most {4 * lo + 1} frames at this size")
    area = _area(shape.size)
    for size in ("720p", "480p"):  # aliases: they take the picture's orientation
        if _area(size) < area and _fits(needs(replace(shape, size=size)), have):
            hints.append(f"size {size} with {shape.frames} frames")
            break
    return ("What fits: " + ", or ".join(hints) + ".") if hints else None


def _preset_hint(cfg: ModelConfig) -> str:
    if cfg.name != "tiny":
        return (f"No memory plan of {cfg.name} fits this machine; the tiny preset (same architecture, tiny widths) "
                "does: --preset tiny")
    return "Nothing smaller fits: free memory on this machine"


def _area(size: str) -> int:
    w, h = parse_size(size)
    return w * h


__all__ = [
    "GIB", "K_DIT", "K_VAE_ENCODE", "K_VAE_DECODE", "Part", "StageNeed", "Capacity", "RequestShape",
    "expert_bytes", "text_encoder_bytes", "vae_bytes", "resting_need", "load_need", "request_needs",
    "host_available_bytes", "device_available_bytes", "capacity", "open_request", "check_before_load", "check_load",
    "check_request", "check_run", "alternative_plans",
]
