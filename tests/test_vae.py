"""The Wan2.1 causal 3D VAE: official-fixture parity, checkpoint names, causality, tiling, input checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wan_runtime.config import A14B, VAEConfig
from wan_runtime.errors import ConfigError
from wan_runtime.modules.vae import WanVAE, blend_weights, tile_spans

FIXTURES = Path(__file__).parent / "fixtures" / "official"

# Tolerances on CPU fp32 against the official implementation (fixtures/official/README.md).
LATENT_TOL = 1e-4  # measured 2.1e-6
DECODED_TOL = 1e-3  # measured 5.2e-6


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "vae_tiny.safetensors")


@pytest.fixture(scope="module")
def tiny_io() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "vae_tiny_io.safetensors")


@pytest.fixture(scope="module")
def tiny_vae(tiny_state) -> WanVAE:
    vae = WanVAE(VAEConfig(dim=8)).eval()
    vae.load_state_dict(tiny_state, strict=True)
    return vae


def _spatially_local(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fixture weights with every 3x3 spatial kernel cut to its centre tap and attention outputs zeroed.

    The network then mixes nothing across pixels (time mixing stays), so tiling must be exact.
    """
    local = {}
    for name, value in state.items():
        value = value.clone()
        if name.endswith("weight") and value.dim() >= 4 and value.shape[-2:] == (3, 3):
            centre = value[..., 1:2, 1:2].clone()
            value.zero_()
            value[..., 1:2, 1:2] = centre
        if ".proj." in name:  # attention output projection: x + attn(x) becomes x
            value.zero_()
        local[name] = value
    return local


# ---- parity with the official implementation ------------------------------------------------

def test_fixture_config_has_the_real_latent_statistics(tiny_io):
    cfg = VAEConfig(dim=8)
    assert torch.equal(torch.tensor(cfg.latents_mean), tiny_io["latents_mean"])
    assert torch.equal(torch.tensor(cfg.latents_std), tiny_io["latents_std"])


def test_encode_matches_official_fixture(tiny_vae, tiny_io):
    latent = tiny_vae.encode(tiny_io["video"])
    assert latent.shape == (1, 16, 3, 4, 6)
    assert latent.dtype == torch.float32
    assert (latent - tiny_io["latent"]).abs().max().item() < LATENT_TOL


def test_decode_matches_official_fixture_before_clamping(tiny_vae, tiny_io):
    # The fixture holds the raw official `WanVAE_.decode` output (it spans about [-3.4, 2.7]).
    decoded = tiny_vae.decode(tiny_io["latent"], clamp=False)
    assert decoded.shape == (1, 3, 9, 32, 48)
    assert (decoded - tiny_io["decoded"]).abs().max().item() < DECODED_TOL


def test_decode_clamps_like_the_official_wrapper(tiny_vae, tiny_io):
    decoded = tiny_vae.decode(tiny_io["latent"])
    assert decoded.min().item() >= -1.0 and decoded.max().item() <= 1.0
    expected = tiny_io["decoded"].clamp(-1.0, 1.0)  # what `Wan2_1_VAE.decode` returns
    assert (decoded - expected).abs().max().item() < DECODED_TOL


# ---- checkpoint names and the meta device ---------------------------------------------------

def test_a14b_vae_has_exactly_the_official_checkpoint_names_and_shapes(fixtures_dir):
    expected = json.loads((fixtures_dir / "keys_vae_wan21_official.json").read_text())
    with torch.device("meta"):
        vae = WanVAE(A14B.vae)
    shapes = {name: list(p.shape) for name, p in vae.state_dict().items()}
    assert shapes == expected
    assert sum(p.numel() for p in vae.parameters()) == 126_892_531


def test_vae_holds_no_buffers_so_a_meta_model_loads_from_the_checkpoint_alone(tiny_state, tiny_io):
    with torch.device("meta"):
        vae = WanVAE(VAEConfig(dim=8))
    assert list(vae.buffers()) == []
    vae.load_state_dict(tiny_state, strict=True, assign=True)
    latent = vae.eval().encode(tiny_io["video"])
    assert (latent - tiny_io["latent"]).abs().max().item() < LATENT_TOL


# ---- causality and chunking -----------------------------------------------------------------

def test_encode_is_causal_in_time(tiny_vae, tiny_io):
    # the first 5 frames give the first 2 latent frames, whatever follows them
    full = tiny_vae.encode(tiny_io["video"])
    prefix = tiny_vae.encode(tiny_io["video"][:, :, :5])
    assert (prefix - full[:, :, :2]).abs().max().item() < 1e-5


def test_decode_is_causal_in_time(tiny_vae, tiny_io):
    full = tiny_vae.decode(tiny_io["latent"], clamp=False)
    prefix = tiny_vae.decode(tiny_io["latent"][:, :, :2], clamp=False)
    assert prefix.shape[2] == 5
    assert (prefix - full[:, :, :5]).abs().max().item() < 1e-5


def test_batch_items_are_encoded_and_decoded_independently(tiny_vae, tiny_io):
    video = torch.cat([tiny_io["video"], tiny_io["video"].flip(-1)])
    latent = tiny_vae.encode(video)
    assert (latent[:1] - tiny_vae.encode(video[:1])).abs().max().item() < 1e-5
    assert (latent[1:] - tiny_vae.encode(video[1:])).abs().max().item() < 1e-5
    decoded = tiny_vae.decode(latent, clamp=False)
    assert (decoded[1:] - tiny_vae.decode(latent[1:], clamp=False)).abs().max().item() < 1e-5


def test_single_frame_encodes_to_one_latent_frame_and_back(tiny_vae, tiny_io):
    image = tiny_io["video"][:, :, :1]
    latent = tiny_vae.encode(image)
    assert latent.shape == (1, 16, 1, 4, 6)
    assert tiny_vae.decode(latent).shape == (1, 3, 1, 32, 48)


# ---- spatial tiling -------------------------------------------------------------------------

def test_tiles_overlap_by_at_least_a_quarter_and_cover_the_axis():
    for size, tile in [(10, 8), (14, 8), (90, 32), (160, 64), (61, 16)]:
        spans = tile_spans(size, tile)
        assert spans[0][0] == 0 and spans[-1][1] == size
        assert all(stop - start == tile for start, stop in spans)
        for (_, prev_stop), (start, _) in zip(spans, spans[1:]):
            assert prev_stop - start >= tile // 4
    assert tile_spans(8, 8) == [(0, 8)]
    assert tile_spans(6, 8) == [(0, 6)]  # an axis smaller than a tile is one (smaller) tile


def test_blend_weights_ramp_linearly_and_sum_to_one():
    spans = tile_spans(14, 8)  # (0, 8), (6, 14): 2 latent pixels = 16 pixels of overlap
    first, second = blend_weights(spans, scale=8)
    total = torch.zeros(14 * 8)
    total[0:64] += first
    total[48:112] += second
    assert torch.allclose(total, torch.ones_like(total))
    assert torch.all(first[:48] == 1) and torch.all(second[16:] == 1)
    ramp = second[:16]
    assert torch.all(ramp[1:] > ramp[:-1])  # rises across the overlap
    assert torch.allclose(ramp[1:] - ramp[:-1], torch.full((15,), 1 / 16))  # linearly


def test_tiled_decode_is_exact_for_a_spatially_local_network(tiny_state):
    # With no mixing across pixels, blending tiles must reproduce the untiled result:
    # this checks tile placement and weights. Measured max abs difference: 1.2e-7.
    vae = WanVAE(VAEConfig(dim=8)).eval()
    vae.load_state_dict(_spatially_local(tiny_state))
    z = torch.randn(1, 16, 2, 10, 14, generator=torch.Generator().manual_seed(0))  # 80x112 px, 2x2 tiles of 64
    untiled = vae.decode(z, clamp=False)
    tiled = vae.decode(z, tile_px=64, clamp=False)
    assert (tiled - untiled).abs().max().item() < 1e-5


def test_tiled_encode_is_exact_for_a_spatially_local_network(tiny_state):
    vae = WanVAE(VAEConfig(dim=8)).eval()
    vae.load_state_dict(_spatially_local(tiny_state))
    video = torch.rand(1, 3, 5, 80, 112, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert (vae.encode(video, tile_px=64) - vae.encode(video)).abs().max().item() < 1e-5  # measured 1.2e-7


def test_tiled_decode_stays_close_to_untiled_with_the_fixture_weights(tiny_vae, tiny_io):
    # The random-weight tiny VAE mixes pixels across its whole (small) frame, so 64 px tiles
    # (8 latent pixels, 2 of them overlap) change its output a lot near seams: measured mean abs
    # difference 0.20 at tile 64 and 0.05 at tile 96 (max 1.9 / 0.93), against a mean |output| of
    # 0.52 and 0.55 between decodes of two unrelated latents. Bounds: mean < 0.3 and < 0.1.
    video = torch.nn.functional.interpolate(tiny_io["video"][:, :, :5], size=(5, 96, 128), mode="trilinear")
    latent = tiny_vae.encode(video)
    untiled = tiny_vae.decode(latent)
    assert (tiny_vae.decode(latent, tile_px=64) - untiled).abs().mean().item() < 0.3
    assert (tiny_vae.decode(latent, tile_px=96) - untiled).abs().mean().item() < 0.1


def test_a_tile_as_large_as_the_frame_changes_nothing(tiny_vae, tiny_io):
    assert torch.equal(tiny_vae.decode(tiny_io["latent"], tile_px=64), tiny_vae.decode(tiny_io["latent"]))
    assert torch.equal(tiny_vae.encode(tiny_io["video"], tile_px=64), tiny_vae.encode(tiny_io["video"]))


# ---- input validation -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "shape, problem",
    [
        ((3, 9, 32, 48), "unsqueeze"),  # no batch dimension
        ((1, 4, 9, 32, 48), "3 RGB channels"),
        ((1, 3, 8, 32, 48), r"4n\+1 frames"),
        ((1, 3, 9, 36, 48), "multiples of 8"),
        ((1, 3, 9, 32, 0), "multiples of 8"),
    ],
)
def test_encode_rejects_bad_videos(tiny_vae, shape, problem):
    with pytest.raises(ConfigError, match=problem):
        tiny_vae.encode(torch.zeros(shape))


def test_encode_rejects_integer_videos(tiny_vae):
    with pytest.raises(ConfigError, match="127.5"):
        tiny_vae.encode(torch.zeros(1, 3, 1, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize(
    "shape, problem",
    [((16, 3, 4, 6), "unsqueeze"), ((1, 8, 3, 4, 6), "16 latent channels"), ((1, 16, 0, 4, 6), "empty")],
)
def test_decode_rejects_bad_latents(tiny_vae, shape, problem):
    with pytest.raises(ConfigError, match=problem):
        tiny_vae.decode(torch.zeros(shape))


@pytest.mark.parametrize("tile_px", [48, 72, 100, 0, True, 256.0])
def test_bad_tile_sizes_are_rejected_with_the_fix(tiny_vae, tiny_io, tile_px):
    with pytest.raises(ConfigError, match="tile_px"):
        tiny_vae.decode(tiny_io["latent"], tile_px=tile_px)
    with pytest.raises(ConfigError, match="tile_px"):
        tiny_vae.encode(tiny_io["video"], tile_px=tile_px)


def test_inconsistent_config_is_rejected():
    with pytest.raises(ConfigError, match="temporal_downsample"):
        WanVAE(VAEConfig(dim=8, temporal_downsample=(False, True)))
    with pytest.raises(ConfigError, match="latents_mean"):
        WanVAE(VAEConfig(dim=8, z_dim=4))


# ---- GPU: bf16 compute ----------------------------------------------------------------------

@pytest.mark.gpu
def test_bf16_on_gpu_tracks_fp32(tiny_state, tiny_io):
    vae = WanVAE(VAEConfig(dim=8)).eval()
    vae.load_state_dict(tiny_state)
    vae = vae.to("cuda", torch.bfloat16)
    latent = vae.encode(tiny_io["video"].cuda()).cpu()
    decoded = vae.decode(tiny_io["latent"].cuda(), clamp=False).cpu()
    assert latent.dtype == decoded.dtype == torch.float32
    # Against the official fp32 outputs (|latent| <= 2.2, |decoded| <= 3.4). Measured on an H100
    # (torch 2.11): latent 0.053, decoded 0.11 in bf16; fp32 on the GPU (TF32 convs) 2.7e-3 / 8.2e-3.
    assert (latent - tiny_io["latent"]).abs().max().item() < 0.15
    assert (decoded - tiny_io["decoded"]).abs().max().item() < 0.3
