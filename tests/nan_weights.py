"""A worker factory for harness tests: the tiny preset with one expert's weights all NaN (`EXPERT`)."""

from __future__ import annotations

import torch

from wan_runtime.pipeline import WanI2V

EXPERT = "low"


def poison(pipe: WanI2V, expert: str) -> WanI2V:
    """Fill every weight of `expert` ("high" or "low") with NaN, in place; returns the pipeline."""
    with torch.no_grad():
        for tensor in [*pipe.experts[expert].parameters(), *pipe.experts[expert].buffers()]:
            if tensor.is_floating_point():
                tensor.fill_(float("nan"))
    return pipe


def load(source, preset, device, memory, attention, observer, **options) -> WanI2V:
    """WanI2V.load (with the worker's other load options), then the `EXPERT` expert's weights set to NaN."""
    return poison(WanI2V.load(source, preset, device, memory, attention, observer, **options), EXPERT)
