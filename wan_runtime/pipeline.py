"""WanI2V: the Wan2.2 image-to-video pipeline (two experts), with every stage reported to an observer.

The algorithm follows the official `wan/image2video.py`:
  image -> [-1, 1] -> bicubic resize to (h, w) -> + (F-1) zero frames -> VAE encode -> y (16 ch)
  mask (frame 0 = 1, repeated 4x, reshaped to 4 ch)      -> y = [mask, y] (20 ch)
  noise [16, T, h/8, w/8] from a generator seeded on the run's device
  for t in scheduler timesteps: expert = high if t >= boundary*1000 else low
      v = uncond + g_expert * (cond - uncond);  latent = scheduler.step(v, t, latent)
  VAE decode -> uint8 RGB frames
"""

from __future__ import annotations

import logging
import random
from contextlib import contextmanager
from itertools import groupby
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from wan_runtime.budget import VramBudget, apply_vram_budget
from wan_runtime.compile import block_call
from wan_runtime.compute import ComputePlan
from wan_runtime.config import DEFAULT_NEGATIVE_PROMPT, ModelConfig, get_preset
from wan_runtime.errors import ConfigError, NonFiniteError, StageOutOfMemoryError, first_line
from wan_runtime.experts import PlacedExpert, effective_placement, load_expert
from wan_runtime.images import conditioning_tensor, image_to_tensor, load_image
from wan_runtime.memory import MemoryPlan
from wan_runtime.observer import Expert, NullObserver, Observer, StepInfo
from wan_runtime.offload import WeightGroup
from wan_runtime.parallel import ParallelContext, ParallelPlan
from wan_runtime.request import GenerationRequest
from wan_runtime.resources import capacity, check_load, check_request, open_request
from wan_runtime.scheduler import expert_for_timestep, make_scheduler, scheduler_step
from wan_runtime.sizes import VideoGeometry, geometry, parse_size
from wan_runtime.weights import load_text_encoder, load_vae, resolve_device

log = logging.getLogger("wan_runtime")

# What to suggest when a stage runs out of memory.
_OOM_ADVICE: dict[str, str] = {
    "load": "experts=swap (one expert on the GPU), dit_blocks=stream, weight_dtype=fp8, text_encoder=cpu",
    "text_encode": "text_encoder=cpu or text_encoder=offload_after",
    "image_encode": "vae_tiling (e.g. 256) or a smaller size",
    "denoise_high": "experts=swap, dit_blocks=stream, weight_dtype=fp8, text_encoder=offload_after, "
                    "fewer frames or a smaller size",
    "denoise_low": "experts=swap, dit_blocks=stream, weight_dtype=fp8, text_encoder=offload_after, "
                   "fewer frames or a smaller size",
    "vae_decode": "vae_tiling (e.g. 256), vae_dtype=bf16, or a smaller size",
    "postprocess": "a smaller output size",
}


@dataclass
class GenerationResult:
    """Frames of one generation plus what a caller needs to describe it."""

    frames: np.ndarray | None  # uint8 [F, H, W, 3], lossless; None on ranks other than 0 (parallel runs)
    seed: int
    geometry: VideoGeometry
    valid_video: bool  # False when execute_steps skipped part of the schedule
    steps_high: int  # steps run (or scheduled, when skipped) on each expert
    steps_low: int
    timesteps: list[float] = field(default_factory=list)
    experts: list[str] = field(default_factory=list)  # expert used at each step of the schedule


def frames_to_uint8(video: torch.Tensor) -> np.ndarray:
    """[3, F, H, W] in [-1, 1] -> uint8 [F, H, W, 3] (rounded)."""
    x = video.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def resize_video(video: torch.Tensor, height: int, width: int, anti_aliasing: bool) -> torch.Tensor:
    """Bicubic resize of a [3, F, H, W] video to (height, width)."""
    frames = video.permute(1, 0, 2, 3).float()
    out = F.interpolate(frames, size=(height, width), mode="bicubic", align_corners=False, antialias=anti_aliasing)
    return out.permute(1, 0, 2, 3)


def condition_mask(frames: int, lat_h: int, lat_w: int, device: torch.device) -> torch.Tensor:
    """The 4-channel first-frame mask [4, T_lat, lat_h, lat_w]: ones for frame 0 (repeated 4x), zeros after."""
    msk = torch.zeros(1, frames, lat_h, lat_w, device=device)
    msk[:, 0] = 1
    msk = torch.cat([msk[:, :1].repeat_interleave(4, dim=1), msk[:, 1:]], dim=1)  # [1, F+3, h, w]
    msk = msk.view(1, msk.shape[1] // 4, 4, lat_h, lat_w)  # [1, T_lat, 4, h, w]
    return msk.transpose(1, 2)[0]


class WanI2V:
    """Wan2.2-I2V pipeline: loaded once, then `generate(request)` any number of times."""

    def __init__(
        self,
        cfg: ModelConfig,
        device: torch.device,
        memory: MemoryPlan,
        placed: dict[str, PlacedExpert],
        vae,
        text_encoder,
        source: str,
        vram_budget: VramBudget | None = None,
        check_resources: bool = True,
        compute: ComputePlan | None = None,
        text_weights: WeightGroup | None = None,
        parallel: ParallelContext | None = None,
    ):
        self.cfg = cfg
        self.device = device
        self.memory = memory
        self.compute = compute or ComputePlan()
        self.placed = placed  # how each expert is brought onto and off the device
        self.experts = {name: p.model for name, p in placed.items()}
        self.vae = vae
        self.text_encoder = text_encoder
        self.text_weights = text_weights  # offload_after: the encoder's host copy (pinned on a GPU)
        self.source = source
        self.vram_budget = vram_budget  # the enforced cap, when the plan has one
        # Refuse a request whose memory floor does not fit what is free (wan_runtime/resources.py).
        self.check_resources = check_resources
        self._warm_shapes: set[tuple] = set()  # input shapes the compiled block call has seen
        self.parallel = parallel  # this rank's part of a multi-GPU run; None: a plain single process

    @property
    def effective_placement(self) -> dict[str, str | None]:
        """Where the memory plan's placements really put the networks on this device (see experts.effective_placement)."""
        return effective_placement(self.memory, self.device)

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        source: str | Path = "synthetic",
        preset: str | ModelConfig = "tiny",
        device: str | torch.device = "cpu",
        memory: MemoryPlan | None = None,
        attention: str = "auto",
        observer: Observer | None = None,
        cross_attention: str | None = None,
        check_resources: bool = True,
        compute: ComputePlan | None = None,
        parallel: ParallelPlan | None = None,
    ) -> "WanI2V":
        """Build the networks from `source` ("synthetic" or a checkpoint folder) per the memory and compute plans.

        Under `experts=swap` (and `dit_blocks=stream`) both experts end the load parked in host
        memory, built part by part so the device never holds more than one part of a parked
        expert; each denoise stage brings its expert in. A `vram_budget_gib` is applied first.
        Before anything is allocated, the plan's memory floor is checked against what the device
        and host have free (InsufficientMemoryError naming a plan that fits); `check_resources=False`
        skips that check here and in `generate`, for a caller that wants the real out-of-memory.
        Under `text_encoder=offload_after` the encoder is parked in one host buffer (pinned on a
        GPU), so bringing it in is one copy and parking it is free.

        `parallel` (or `experts="split"`) makes this process one rank of a torchrun job: call `load`
        and `generate` on every rank with the same arguments; the device becomes the rank's GPU, and
        only rank 0 (`is_output_rank`) gets frames. `close()` releases the rank groups. The memory
        floors are those of one process holding the whole plan, so a rank of several skips them.
        """
        obs = observer or NullObserver()
        cfg = get_preset(preset) if isinstance(preset, str) else preset
        device = resolve_device(device)
        memory = memory or MemoryPlan()
        compute = compute or ComputePlan()
        src: str | Path = source if source == "synthetic" else Path(source)
        ctx = None
        if parallel is not None or memory.experts == "split":  # join the job first: it decides the device
            ctx = ParallelContext.start(parallel or ParallelPlan(), memory, cfg.dit.num_heads, device)
            device = ctx.device
            check_resources = check_resources and ctx.world_size == 1
        if check_resources:
            check_load(cfg, memory, device, checkpoint=src != "synthetic", exact_blocks=compute.exact_last_blocks)
        offload = torch.device("cpu")
        with _stage(obs, "load"):
            budget = None
            if memory.vram_budget_gib is not None:
                budget = apply_vram_budget(memory.vram_budget_gib, device)
                log.info(budget.describe())
            # The text encoder comes first: under offload_after it is built on the device (synthetic
            # values are made there, fast) and parked in host memory before the experts arrive, so
            # it never shares the device with them until text_encode needs it (as upstream).
            text_device = offload if memory.text_encoder == "cpu" else device
            text_encoder = load_text_encoder(src, cfg, memory.load_dtype, text_device)
            text_weights = None
            if memory.text_encoder == "offload_after":
                text_weights = WeightGroup(text_encoder.model, pinned=device.type == "cuda")
            if ctx is not None:
                ctx.shard_text_encoder(text_encoder.model)
            call = block_call(compute)  # one (compiled) block call for both experts
            placed = {name: load_expert(src, cfg, name, memory, device, attention, cross_attention, compute, call,
                                        ctx)
                      for name in (ctx.experts if ctx else ("low", "high"))}
            vae = load_vae(src, cfg, memory.vae_dtype, device)
            _sync(device)
        return cls(cfg, device, memory, placed, vae, text_encoder, str(source), vram_budget=budget,
                   check_resources=check_resources, compute=compute, text_weights=text_weights, parallel=ctx)

    @property
    def is_output_rank(self) -> bool:
        """True where `generate` returns frames: a single process, or rank 0 of a parallel run."""
        return self.parallel is None or self.parallel.is_output_rank

    def close(self) -> None:
        """Release the rank groups of a parallel run (a plain pipeline has nothing to release).

        The default process group stays, so the process can load another pipeline;
        `wan_runtime.parallel.launch.shutdown()` ends it before the process exits.
        """
        if self.parallel is not None:
            self.parallel.close()

    # ---------------------------------------------------------------- generation
    def generate(self, request: GenerationRequest, observer: Observer | None = None) -> GenerationResult:
        """Generate one video; stages and steps are reported to `observer`."""
        obs = observer or NullObserver()
        seed = request.seed if request.seed >= 0 else random.randint(0, 2**31 - 1)
        image, shape = open_request(request, self.cfg)
        geo = shape.geometries(self.cfg)[-1]
        if self.check_resources:
            cap = self.vram_budget.cap_bytes if self.vram_budget is not None else None
            check_request(self.cfg, self.memory, self.device, shape, capacity(self.device, cap),
                          exact_blocks=self.compute.exact_last_blocks)
        if self.parallel is not None:
            self.parallel.check_guidance([request.guide_scale_high, request.guide_scale_low])
            if request.seed < 0:
                seed = self.parallel.same_seed(seed)  # every rank must draw the same noise
        if request.mode == "refine":
            return self._generate_refine(request, image, seed, obs)
        context, context_null = self._encode_text(request, obs)
        y = self._encode_image(image, geo, obs)
        noise, gen = self._noise(geo, seed)
        latent, trace = self._denoise(request, noise, gen, y, context, context_null, obs, start_index=0)
        return self._finish(request, latent, geo, seed, trace, obs)

    def _encode_text(self, request: GenerationRequest, obs: Observer) -> tuple[torch.Tensor, torch.Tensor]:
        negative = request.negative_prompt or DEFAULT_NEGATIVE_PROMPT
        with _stage(obs, "text_encode"):
            if self.text_weights is not None:
                self.text_weights.to_device(self.device)  # one copy of the parked host buffer
            # encode() runs where the model lives and returns on the pipeline's device
            context, context_null = self.text_encoder.encode([request.prompt, negative], self.device)
            if self.text_weights is not None:
                self.text_weights.to_host()  # free: the host copy is still there
            dtype = self.memory.torch_dtype
            context = context.to(dtype)[None]  # [1, L, text_dim]
            context_null = context_null.to(dtype)[None]
            _sync(self.device)
        return context, context_null

    def _encode_image(self, image: Image.Image, geo: VideoGeometry, obs: Observer) -> torch.Tensor:
        """Image-condition input y [1, 20, T_lat, lat_h, lat_w]: mask channels + VAE latent."""
        with _stage(obs, "image_encode"):
            img = conditioning_tensor(image, geo.height, geo.width)  # fp32 on the CPU, as upstream
            clip = torch.zeros(3, geo.frames, geo.height, geo.width)
            clip[:, 0] = img
            vae_dtype = self.memory.vae_torch_dtype
            latent = self.vae.encode(clip[None].to(self.device, vae_dtype), tile_px=self.memory.vae_tiling)
            mask = condition_mask(geo.frames, geo.lat_height, geo.lat_width, self.device)
            y = torch.cat([mask[None], latent.float()], dim=1)
            _sync(self.device)
        return y

    def _noise(self, geo: VideoGeometry, seed: int) -> tuple[torch.Tensor, torch.Generator]:
        """Initial noise from a generator on the run's device; the scheduler keeps using that generator."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        shape = (1, self.cfg.vae.z_dim, geo.lat_frames, geo.lat_height, geo.lat_width)
        return torch.randn(shape, dtype=torch.float32, generator=gen, device=self.device), gen

    def _activate(self, expert: Expert) -> torch.nn.Module | None:
        """Return the expert ready on the device; under `swap` park the other one first.

        None on a rank that does not hold it (experts="split": the other rank group runs it).
        """
        self._park("low" if expert == "high" else "high")
        if expert not in self.placed:
            return None
        self.placed[expert].activate()
        return self.experts[expert]

    def _compile_for(self, expert: Expert, x: torch.Tensor, context: torch.Tensor, y: torch.Tensor,
                     obs: Observer) -> None:
        """With compiled blocks, compile them for these input shapes in a `compile` stage, once per shape.

        One block runs (both experts share the compiled call), so no denoise step pays for the compile.
        The block needs its weights on the device: under swap or stream the expert is brought in here,
        so that one copy is in the `compile` stage instead of the denoise stage that follows.
        """
        shape = (tuple(x.shape), tuple(context.shape), x.dtype)
        if self.compute.compile == "none" or shape in self._warm_shapes:
            return
        with _stage(obs, "compile"):
            model = self._activate(expert)
            if model is not None:  # None: the other rank group holds this expert (experts="split")
                t = torch.full((1,), 999.0, device=self.device, dtype=torch.float32)
                model.warm_up(x, t, context, y)
            _sync(self.device)
        self._warm_shapes.add(shape)

    def _park(self, *experts: Expert) -> None:
        """Free the device memory of swapped or streamed experts (their weights stay in host memory)."""
        for name in experts:
            if name in self.placed:
                self.placed[name].park()
        if self.memory.experts == "swap" and self.device.type == "cuda":
            # Give the cached blocks back, as upstream does after each offload; also before the first
            # expert arrives, so its weights do not land between the VAE encode's cached blocks: at
            # 720p that fragmentation held ~14 GiB reserved-but-unused through the denoise on an H100.
            torch.cuda.empty_cache()

    def rest(self) -> None:
        """Return to what a loaded pipeline holds between requests, after a generation stopped midway.

        A generation that raised (an out-of-memory, an observer that cancels it) may leave a swapped
        expert or an offloaded text encoder on the device; the next request's memory floor assumes
        they are parked, so a long-running caller (the service) calls this after every failure.
        """
        if self.text_weights is not None:
            self.text_weights.to_host()
        self._park("high", "low")

    def _denoise(
        self,
        request: GenerationRequest,
        latent: torch.Tensor,
        gen: torch.Generator,
        y: torch.Tensor,
        context: torch.Tensor,
        context_null: torch.Tensor,
        obs: Observer,
        start_index: int,
    ) -> tuple[torch.Tensor, list[tuple[float, str]]]:
        """Run the schedule from `start_index`; returns the final latent and (timestep, expert) per step."""
        scheduler = make_scheduler(request.solver, request.steps, request.shift, self.cfg.num_train_timesteps)
        timesteps = [float(t) for t in scheduler.timesteps]
        if start_index:
            scheduler.set_begin_index(start_index)
        experts = expert_schedule(request, self.cfg)
        plan = [(i, timesteps[i], experts[i]) for i in range(start_index, len(timesteps))]
        dtype = self.memory.torch_dtype
        y = y.to(dtype)
        # Consecutive steps on the same expert form one stage (denoise_high, then denoise_low).
        stages = [(expert, list(run)) for expert, run in groupby(plan, key=lambda step: step[2])]
        for number, (expert, run) in enumerate(stages):
            name = f"denoise_{expert}"
            self._compile_for(expert, latent.to(dtype), context, y, obs)
            with _stage(obs, name):
                model = self._activate(expert)  # a swap's copy time belongs to the stage it serves
                guide = request.guide_scale_high if expert == "high" else request.guide_scale_low
                # One flag per step, written on the device and read once per stage: no host sync per step.
                finite = torch.ones(len(run), dtype=torch.bool, device=self.device)
                for k, (i, t, _) in enumerate(run):
                    if request.execute_steps is not None and i not in request.execute_steps:
                        continue
                    x = latent.to(dtype)
                    tt = torch.full((1,), t, device=self.device, dtype=torch.float32)
                    velocity = self._velocity(model, expert, x, tt, (context, context_null), y, guide, latent)
                    latent = scheduler_step(scheduler, velocity.float(), scheduler.timesteps[i], latent, generator=gen)
                    finite[k] = torch.isfinite(latent).all()
                    obs.on_step(StepInfo(index=i, total=len(timesteps), timestep=t, expert=expert, stage=name))
                if number == len(stages) - 1:
                    # After the last step no expert is active: swap frees the device for the VAE (as upstream).
                    self._park("high", "low")
                _sync(self.device)
                _check_finite(finite, run, len(timesteps), expert, guide, self.memory)
        return latent, [(t, e) for _, t, e in plan]

    def _velocity(self, model: torch.nn.Module | None, expert: Expert, x: torch.Tensor, t: torch.Tensor,
                  contexts: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor, guide: float,
                  latent: torch.Tensor) -> torch.Tensor:
        """The guided velocity of one step: uncond + guide * (cond - uncond).

        A parallel run computes the two predictions where its plan says and hands the velocity to the
        ranks that do not hold `expert` (`model` is None there).
        """
        par = self.parallel
        velocity = None
        if model is not None:
            if par is None:
                cond, uncond = model(x, t, contexts[0], y), model(x, t, contexts[1], y)
            else:
                cond, uncond = par.cfg_branches(model, x, t, contexts, y)
            velocity = uncond + guide * (cond - uncond)
        return velocity if par is None else par.share_velocity(velocity, expert, latent)

    def _finish(
        self,
        request: GenerationRequest,
        latent: torch.Tensor,
        geo: VideoGeometry,
        seed: int,
        trace: list[tuple[float, str]],
        obs: Observer,
    ) -> GenerationResult:
        if request.output_size is not None:
            geo = replace(geo, width=request.output_size[0], height=request.output_size[1])
        summary = dict(
            seed=seed,
            geometry=geo,
            valid_video=request.execute_steps is None,
            steps_high=sum(1 for _, e in trace if e == "high"),
            steps_low=sum(1 for _, e in trace if e == "low"),
            timesteps=[t for t, _ in trace],
            experts=[e for _, e in trace],
        )
        if not self.is_output_rank:
            return GenerationResult(frames=None, **summary)  # rank 0 decodes; the latents are the same here
        with _stage(obs, "vae_decode"):
            vae_dtype = self.memory.vae_torch_dtype
            video = self.vae.decode(latent.to(vae_dtype), tile_px=self.memory.vae_tiling)[0]
            _sync(self.device)
        with _stage(obs, "postprocess"):
            if request.output_size is not None:
                w, h = request.output_size
                video = resize_video(video, h, w, request.output_anti_aliasing)
            frames = frames_to_uint8(video)
        return GenerationResult(frames=frames, **summary)

    # ---------------------------------------------------------------- refine mode
    def _generate_refine(
        self, request: GenerationRequest, image: Image.Image, seed: int, obs: Observer
    ) -> GenerationResult:
        """Low-resolution pass with both experts, pixel upscale, re-noise, low-noise expert at the target size.

        Choices: the target is `request.size` (area rule, the image's aspect, as a plain run); the
        first pass runs at `refine.first_size`, decodes to pixels, and a bicubic resize in pixel space
        (anti-aliasing as requested) brings it to the target, re-encoded by the VAE, because latent-space
        interpolation of a causal VAE latent smears detail. `refine.scale_factor` states the expected
        upscale ratio (the configuration file's 1.5); a target that disagrees with it by more than 0.1
        is an error rather than a silent surprise. Re-noising follows flow matching:
        x_t = (1 - sigma) x0 + sigma * noise at the schedule position where the last `strength`
        fraction of steps begins.
        """
        opts = request.refine
        first = replace(request, size=opts.first_size, mode="both", output_size=None, execute_steps=None)
        geo1 = geometry(first.size, first.frames, image.width, image.height,
                        self.cfg.vae_stride, self.cfg.patch_size, request.size_rule)
        geo2 = geometry(request.size, request.frames, image.width, image.height,
                        self.cfg.vae_stride, self.cfg.patch_size, request.size_rule)
        ratio = geo2.height / geo1.height
        if abs(ratio - opts.scale_factor) > 0.1:
            raise ConfigError(
                f"refine mode: {geo1.width}x{geo1.height} -> {geo2.width}x{geo2.height} is an upscale of "
                f"{ratio:.3f}, but scale_factor is {opts.scale_factor}; set the size or scale_factor to agree"
            )
        context, context_null = self._encode_text(request, obs)
        y1 = self._encode_image(image, geo1, obs)
        noise1, gen = self._noise(geo1, seed)
        latent1, trace1 = self._denoise(first, noise1, gen, y1, context, context_null, obs, 0)
        with _stage(obs, "vae_decode"):
            low_res = self.vae.decode(latent1.to(self.memory.vae_torch_dtype), tile_px=self.memory.vae_tiling)[0]
        with _stage(obs, "image_encode"):
            upscaled = resize_video(low_res, geo2.height, geo2.width, opts.anti_aliasing).clamp(-1, 1)
            x0 = self.vae.encode(upscaled[None].to(self.device, self.memory.vae_torch_dtype),
                                 tile_px=self.memory.vae_tiling).float()
        y2 = self._encode_image(image, geo2, obs)
        scheduler = make_scheduler(request.solver, request.steps, request.shift, self.cfg.num_train_timesteps)
        start = min(request.steps - 1, request.steps - max(1, round(opts.strength * request.steps)))
        sigma = float(scheduler.sigmas[start])
        noise2 = torch.randn(x0.shape, dtype=torch.float32, generator=gen, device=self.device)
        latent2 = (1.0 - sigma) * x0 + sigma * noise2
        latent2, trace2 = self._denoise(request, latent2, gen, y2, context, context_null, obs, start)
        result = self._finish(request, latent2, geo2, seed, trace1 + trace2, obs)
        return result


def expert_schedule(request: GenerationRequest, cfg: ModelConfig) -> list[Expert]:
    """The expert of every step of the request's full schedule (refine: of its final, low-noise pass)."""
    if request.mode in ("single_expert", "refine"):
        return ["low"] * request.steps
    scheduler = make_scheduler(request.solver, request.steps, request.shift, cfg.num_train_timesteps)
    return [expert_for_timestep(t, cfg.boundary, cfg.num_train_timesteps) for t in scheduler.timesteps]


def _check_finite(finite: torch.Tensor, run: list[tuple[int, float, str]], total: int, expert: str,
                  guide: float, memory: MemoryPlan) -> None:
    """Raise NonFiniteError naming the first step of this stage whose latent holds a NaN or an infinity."""
    flags = finite.tolist()
    if all(flags):
        return
    i, t, _ = run[flags.index(False)]
    raise NonFiniteError(
        f"the latents became NaN or infinite at step {i} of {total} (timestep {t:.0f}, {expert}-noise expert, "
        f"stage denoise_{expert}); likely causes: NaN or inf in the {expert}-noise expert's weights (check the "
        f"checkpoint), a guidance scale that is not finite or far too large (guide_scale_{expert}={guide}), or "
        f"values past the range of the compute dtype (weight_dtype={memory.weight_dtype}; try bf16 or fp32)",
        step=i, expert=expert,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _stage(obs: Observer, name: str) -> Iterator[None]:
    """Report a stage to the observer and turn a CUDA out-of-memory into a StageOutOfMemoryError."""
    try:
        with obs.stage(name):
            yield
    except torch.OutOfMemoryError as exc:
        raise StageOutOfMemoryError(
            name,
            f"out of GPU memory in stage {name!r}: {first_line(exc)} "
            f"Options that would help: {_OOM_ADVICE.get(name, 'a smaller size')}.",
        ) from exc


__all__ = [
    "WanI2V", "GenerationResult", "expert_schedule", "load_image",
    "image_to_tensor", "condition_mask", "parse_size",
]
