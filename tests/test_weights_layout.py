"""Checkpoint layout detection: official vs Diffusers, and the errors for folders that are neither."""

from __future__ import annotations

from pathlib import Path

import pytest

from wan_runtime.errors import WeightsError
from wan_runtime.weights.layout import detect_layout


def make_official(root: Path) -> Path:
    """An (empty-file) official layout: both expert folders, VAE and T5 files, tokenizer folder."""
    for folder in ("high_noise_model", "low_noise_model", "google/umt5-xxl"):
        (root / folder).mkdir(parents=True)
    (root / "Wan2.1_VAE.pth").write_bytes(b"")
    (root / "models_t5_umt5-xxl-enc-bf16.pth").write_bytes(b"")
    return root


def make_diffusers(root: Path) -> Path:
    """An (empty-folder) Diffusers layout with its model_index.json."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text('{"_class_name": "WanImageToVideoPipeline", "boundary_ratio": 0.9}')
    for folder in ("transformer", "transformer_2", "vae", "text_encoder", "tokenizer"):
        (root / folder).mkdir()
    return root


def test_official_layout_is_detected_with_its_part_paths(tmp_path):
    layout = detect_layout(make_official(tmp_path))
    assert layout.kind == "official"
    assert layout.high_noise == tmp_path / "high_noise_model"
    assert layout.low_noise == tmp_path / "low_noise_model"
    assert layout.vae == tmp_path / "Wan2.1_VAE.pth"
    assert layout.text_encoder == tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
    assert layout.tokenizer == tmp_path / "google" / "umt5-xxl"
    for part in ("high_noise", "low_noise", "vae", "text_encoder", "tokenizer"):
        assert layout.require(part) == getattr(layout, part)


def test_diffusers_layout_maps_transformer_to_high_noise_and_transformer_2_to_low_noise(tmp_path):
    layout = detect_layout(make_diffusers(tmp_path))
    assert layout.kind == "diffusers"
    assert layout.high_noise == tmp_path / "transformer"
    assert layout.low_noise == tmp_path / "transformer_2"
    assert (layout.vae, layout.text_encoder, layout.tokenizer) == (
        tmp_path / "vae", tmp_path / "text_encoder", tmp_path / "tokenizer")


def test_layout_is_a_frozen_value(tmp_path):
    layout = detect_layout(make_official(tmp_path))
    with pytest.raises(AttributeError):
        layout.kind = "diffusers"  # type: ignore[misc]


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(WeightsError, match="does not exist") as info:
        detect_layout(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    assert "synthetic" in str(info.value)


def test_a_file_instead_of_a_folder_is_refused(tmp_path):
    (tmp_path / "Wan2.1_VAE.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match="is a file"):
        detect_layout(tmp_path / "Wan2.1_VAE.pth")


def test_folder_of_neither_layout_says_what_it_found_and_what_each_layout_needs(tmp_path):
    (tmp_path / "weights.ckpt").write_bytes(b"")
    (tmp_path / "notes").mkdir()
    with pytest.raises(WeightsError) as info:
        detect_layout(tmp_path)
    message = str(info.value)
    assert "neither" in message
    assert "weights.ckpt" in message and "notes/" in message  # what was found
    assert "high_noise_model/" in message and "Wan2.1_VAE.pth" in message  # official needs
    assert "model_index.json" in message and "transformer_2/" in message  # Diffusers needs


def test_missing_part_names_the_part_and_its_expected_path(tmp_path):
    root = make_official(tmp_path)
    (root / "low_noise_model").rmdir()
    layout = detect_layout(root)  # still official: the other parts are there
    with pytest.raises(WeightsError) as info:
        layout.require("low_noise")
    assert "low-noise DiT expert" in str(info.value)
    assert str(root / "low_noise_model") in str(info.value)


def test_missing_diffusers_vae_names_the_vae_folder(tmp_path):
    root = make_diffusers(tmp_path)
    (root / "vae").rmdir()
    with pytest.raises(WeightsError, match="VAE") as info:
        detect_layout(root).require("vae")
    assert str(root / "vae") in str(info.value)


def test_a_folder_holding_both_layouts_is_refused(tmp_path):
    root = make_official(tmp_path)
    (root / "model_index.json").write_text("{}")
    with pytest.raises(WeightsError, match="both layouts"):
        detect_layout(root)
