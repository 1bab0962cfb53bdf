"""Reading checkpoints shard by shard and loading them into meta-device modules, with every failure made clear."""

from __future__ import annotations

import builtins
import json
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from wan_runtime.config import TINY
from wan_runtime.errors import BackendUnavailableError, ConfigError, WeightsError
from wan_runtime.weights import load_dit, load_vae, resolve_dtype
from wan_runtime.weights import reader as reader_module
from wan_runtime.weights.loader import check_checkpoint, load_weights
from wan_runtime.weights.reader import PickleShard, SafetensorsShard, TensorShard, open_checkpoint


class TinyNet(nn.Module):
    """Embedding, a few linear blocks, a norm, and an output layer tied to the embedding."""

    def __init__(self, blocks: int = 4):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.blocks = nn.ModuleList([nn.Linear(8, 8) for _ in range(blocks)])
        self.norm = nn.LayerNorm(8)
        self.out = nn.Linear(8, 10, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        """The output layer reuses the embedding table."""
        self.out.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = x + torch.tanh(block(x))
        return self.out(self.norm(x))


def reference_state(blocks: int = 4) -> dict[str, torch.Tensor]:
    """A checkpoint of TinyNet: seeded values, the tied table stored once (as `embed.weight`)."""
    torch.manual_seed(0)
    state = TinyNet(blocks).state_dict()
    state.pop("out.weight")
    return {k: v.clone() for k, v in state.items()}


def meta_net(blocks: int = 4) -> TinyNet:
    with torch.device("meta"):
        return TinyNet(blocks)


def write_sharded(folder: Path, state: dict[str, torch.Tensor], shards: int) -> Path:
    """Save `state` as `shards` safetensors files plus the index json, as Hugging Face does."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(state)
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state[n].contiguous() for n in names[i::shards]}
        save_file(part, str(folder / file))
        weight_map.update({n: file for n in part})
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def identity(name: str) -> str:
    return name


def load(net: nn.Module, path: Path, **kwargs) -> nn.Module:
    options = dict(rename=identity, dtype=torch.float32, device="cpu", component="tiny net")
    options.update(kwargs)
    return load_weights(net, open_checkpoint(path), **options)


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------

def test_sharded_folder_loads_every_tensor_exactly(tmp_path):
    state = reference_state()
    net = load(meta_net(), write_sharded(tmp_path / "ckpt", state, shards=3))
    for name, value in state.items():
        assert torch.equal(net.get_parameter(name), value), name


def test_index_json_lists_shards_in_order(tmp_path):
    folder = write_sharded(tmp_path / "ckpt", reference_state(), shards=3)
    shards = open_checkpoint(folder)
    assert [Path(s.label).name for s in shards] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]


def test_single_safetensors_file_and_folder_load(tmp_path):
    state = reference_state()
    save_file(state, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    by_file = load(meta_net(), tmp_path / "diffusion_pytorch_model.safetensors")
    by_folder = load(meta_net(), tmp_path)
    for name, value in state.items():
        assert torch.equal(by_file.get_parameter(name), value)
        assert torch.equal(by_folder.get_parameter(name), value)


def test_variant_files_do_not_confuse_the_plain_checkpoint(tmp_path):
    state = reference_state()
    save_file(state, str(tmp_path / "model.safetensors"))
    save_file({k: v.half() for k, v in state.items()}, str(tmp_path / "model.fp16.safetensors"))
    shards = open_checkpoint(tmp_path)
    assert [Path(s.label).name for s in shards] == ["model.safetensors"]


def test_pth_file_loads_memory_mapped_with_weights_only(tmp_path, monkeypatch):
    state = reference_state()
    torch.save(state, tmp_path / "Wan2.1_VAE.pth")
    calls = []
    original = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(reader_module.torch, "load", spy)
    net = load(meta_net(), tmp_path / "Wan2.1_VAE.pth")
    assert calls and all(c.get("weights_only") is True and c.get("mmap") is True for c in calls)
    assert torch.equal(net.embed.weight, state["embed.weight"])


def test_legacy_pth_format_still_loads_weights_only(tmp_path):
    state = reference_state()
    torch.save(state, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    net = load(meta_net(), tmp_path / "old.pth")
    assert torch.equal(net.norm.weight, state["norm.weight"])


def test_loaded_module_does_not_share_memory_with_a_memory_mapped_file(tmp_path):
    torch.save(reference_state(), tmp_path / "w.pth")
    net = load(meta_net(), tmp_path / "w.pth")
    before = net.blocks[0].weight.clone()
    torch.save({k: torch.zeros_like(v) for k, v in reference_state().items()}, tmp_path / "w.pth")
    assert torch.equal(net.blocks[0].weight, before)


# ----------------------------------------------------------------------------------------------
# one shard at a time
# ----------------------------------------------------------------------------------------------

def test_loading_holds_at_most_one_shards_tensors_at_a_time(tmp_path, monkeypatch):
    """Every tensor the reader hands out is tracked by a weakref; when a shard starts, no tensor of
    an earlier shard may still be alive, and never more than one reader tensor is alive at once."""
    folder = write_sharded(tmp_path / "ckpt", reference_state(blocks=8), shards=4)
    live: list[tuple[int, weakref.ref]] = []
    peak_alive = 0
    shard_counter = iter(range(100))
    original = SafetensorsShard.tensors

    def tracked(self):
        nonlocal peak_alive
        index = next(shard_counter)
        earlier_alive = [i for i, ref in live if ref() is not None and i < index]
        assert not earlier_alive, f"tensors of shard(s) {earlier_alive} still alive when shard {index} opened"
        for name, tensor in original(self):
            live.append((index, weakref.ref(tensor)))
            peak_alive = max(peak_alive, sum(ref() is not None for _, ref in live))
            yield name, tensor
            del tensor

    monkeypatch.setattr(SafetensorsShard, "tensors", tracked)
    net = load(meta_net(blocks=8), folder)
    assert next(shard_counter) == 4  # all four shards were read
    assert peak_alive == 1
    assert all(ref() is None for _, ref in live)  # the module holds copies, not the reader's tensors
    assert not any(p.is_meta for p in net.parameters())


def test_names_and_shapes_are_checked_before_any_tensor_is_read(tmp_path, monkeypatch):
    state = reference_state()
    state["norm.weight"] = torch.ones(9)  # wrong shape, in some shard
    folder = write_sharded(tmp_path / "ckpt", state, shards=3)
    monkeypatch.setattr(SafetensorsShard, "tensors", lambda self: pytest.fail("tensor data was read"))
    with pytest.raises(WeightsError, match="norm.weight"):
        load(meta_net(), folder)


# ----------------------------------------------------------------------------------------------
# conversion: dtype, device, renaming, ties
# ----------------------------------------------------------------------------------------------

def test_every_tensor_gets_the_requested_dtype_and_device(tmp_path):
    save_file(reference_state(), str(tmp_path / "m.safetensors"))
    net = load(meta_net(), tmp_path / "m.safetensors", dtype=torch.bfloat16)
    assert {(t.dtype, t.device.type) for t in net.state_dict().values()} == {(torch.bfloat16, "cpu")}


def test_integer_buffers_keep_their_dtype(tmp_path):
    class WithCounter(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.register_buffer("steps", torch.zeros(3, dtype=torch.long))

    state = {"lin.weight": torch.randn(2, 2), "lin.bias": torch.randn(2), "steps": torch.arange(3)}
    save_file(state, str(tmp_path / "m.safetensors"))
    with torch.device("meta"):
        net = WithCounter()
    load(net, tmp_path / "m.safetensors", dtype=torch.float16)
    assert net.steps.dtype == torch.long and net.lin.weight.dtype == torch.float16
    assert torch.equal(net.steps, torch.arange(3))


def test_fp16_keeps_the_modules_a_model_marks_fp32(tmp_path):
    """transformers' umT5 lists `wo` in _keep_in_fp32_modules: it overflows in fp16."""
    class Marked(nn.Module):
        _keep_in_fp32_modules = ["wo"]

        def __init__(self):
            super().__init__()
            self.wi = nn.Linear(2, 2, bias=False)
            self.wo = nn.Linear(2, 2, bias=False)

    save_file({"wi.weight": torch.randn(2, 2), "wo.weight": torch.randn(2, 2)}, str(tmp_path / "m.safetensors"))
    with torch.device("meta"):
        net = Marked()
    load(net, tmp_path / "m.safetensors", dtype=torch.float16)
    assert (net.wi.weight.dtype, net.wo.weight.dtype) == (torch.float16, torch.float32)


def test_rename_maps_checkpoint_names_to_module_names(tmp_path):
    state = reference_state()
    save_file({"model." + k: v for k, v in state.items()}, str(tmp_path / "m.safetensors"))
    net = load(meta_net(), tmp_path / "m.safetensors", rename=lambda n: n.removeprefix("model."))
    assert torch.equal(net.blocks[2].bias, state["blocks.2.bias"])


def test_tied_weights_stay_tied_whichever_name_the_checkpoint_uses(tmp_path):
    state = reference_state()
    state["out.weight"] = state.pop("embed.weight")  # store the table under its other name
    save_file(state, str(tmp_path / "m.safetensors"))
    net = load(meta_net(), tmp_path / "m.safetensors")
    assert net.out.weight is net.embed.weight
    assert torch.equal(net.embed.weight, state["out.weight"])


def test_loaded_module_computes(tmp_path):
    state = reference_state()
    save_file(state, str(tmp_path / "m.safetensors"))
    torch.manual_seed(0)
    reference = TinyNet()
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(load(meta_net(), tmp_path / "m.safetensors")(ids), reference(ids))


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------

def test_missing_shard_is_named(tmp_path):
    folder = write_sharded(tmp_path / "ckpt", reference_state(), shards=3)
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(WeightsError, match="model-00002-of-00003.safetensors") as info:
        open_checkpoint(folder)
    assert "missing" in str(info.value)


def test_missing_checkpoint_file_is_named(tmp_path):
    with pytest.raises(WeightsError, match="does not exist") as info:
        open_checkpoint(tmp_path / "Wan2.1_VAE.pth")
    assert "Wan2.1_VAE.pth" in str(info.value)


def test_folder_without_weights_says_what_it_expected(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match="holds no weights") as info:
        open_checkpoint(tmp_path)
    assert "config.json" in str(info.value)


def test_unindexed_shards_are_refused(tmp_path):
    folder = write_sharded(tmp_path / "ckpt", reference_state(), shards=2)
    (folder / "model.safetensors.index.json").unlink()
    with pytest.raises(WeightsError, match="no .*index.json"):
        open_checkpoint(folder)


def test_truncated_safetensors_names_the_file_and_suggests_downloading_again(tmp_path):
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file(reference_state(), str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WeightsError, match="download it again") as info:
        load(meta_net(), path)
    assert str(path) in str(info.value)


def test_truncated_pth_names_the_file_and_suggests_downloading_again(tmp_path):
    path = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
    torch.save(reference_state(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="download it again") as info:
        load(meta_net(), path)
    assert str(path) in str(info.value)


def test_corrupt_index_json_is_reported(tmp_path):
    folder = write_sharded(tmp_path / "ckpt", reference_state(), shards=2)
    (folder / "model.safetensors.index.json").write_text('{"weight_map": ')
    with pytest.raises(WeightsError, match="model.safetensors.index.json"):
        open_checkpoint(folder)


class _WritesAFile:
    """Unpickling this calls open(path, "w"): it would create a file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


def test_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "Wan2.1_VAE.pth"
    torch.save({"encoder.conv1.weight": torch.zeros(2), "payload": _WritesAFile(marker)}, path)
    with pytest.raises(WeightsError, match="refused") as info:
        load(meta_net(), path)
    assert "could run" in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()
    # Control: the payload is live, an unsafe load does create the file.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_pth_holding_something_other_than_a_state_dict_is_refused(tmp_path):
    torch.save({"model": reference_state(), "epoch": 3}, tmp_path / "train.pth")
    with pytest.raises(WeightsError, match="not a flat state dict"):
        load(meta_net(), tmp_path / "train.pth")


def test_unexpected_name_is_named(tmp_path):
    state = reference_state()
    state["blocks.9.weight"] = torch.zeros(8, 8)
    save_file(state, str(tmp_path / "m.safetensors"))
    with pytest.raises(WeightsError, match="no place for") as info:
        load(meta_net(), tmp_path / "m.safetensors")
    assert "'blocks.9.weight'" in str(info.value)


def test_a_name_the_rename_map_rejects_is_unexpected(tmp_path):
    save_file(reference_state(), str(tmp_path / "m.safetensors"))

    def strict(name: str) -> str:
        if name == "norm.bias":
            raise WeightsError("norm.bias is not a name of this model family")
        return name

    with pytest.raises(WeightsError, match="1 tensors in the checkpoint that this model has no place for") as info:
        load(meta_net(), tmp_path / "m.safetensors", rename=strict)
    assert "the name map says: norm.bias is not a name of this model family" in str(info.value)


def test_missing_names_are_listed_first_few_and_counted(tmp_path):
    state = reference_state(blocks=8)
    kept = {k: v for k, v in state.items() if not k.startswith("blocks.")}
    save_file(kept, str(tmp_path / "m.safetensors"))
    with pytest.raises(WeightsError) as info:
        load(meta_net(blocks=8), tmp_path / "m.safetensors")
    message = str(info.value)
    assert "16 tensors the model needs" in message  # 8 blocks x (weight, bias)
    assert "'blocks.0.weight'" in message
    assert "and 11 more" in message  # five shown


def test_wrong_shape_message_names_tensor_expected_and_found(tmp_path):
    state = reference_state()
    state["blocks.1.weight"] = torch.zeros(8, 4)
    save_file(state, str(tmp_path / "m.safetensors"))
    with pytest.raises(WeightsError) as info:
        load(meta_net(), tmp_path / "m.safetensors")
    message = str(info.value)
    assert "'blocks.1.weight'" in message
    assert "found [8, 4]" in message and "expected [8, 8]" in message
    assert f"in {tmp_path} does not match" in message and "in m.safetensors" in message  # folder once, file per item


def test_a_value_the_module_never_gets_is_reported(tmp_path):
    """A non-persistent buffer is not in any checkpoint; left on meta it would fail later, obscurely."""
    class WithTable(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.register_buffer("table", torch.zeros(4), persistent=False)

    save_file({"lin.weight": torch.randn(2, 2), "lin.bias": torch.randn(2)}, str(tmp_path / "m.safetensors"))
    with torch.device("meta"):
        net = WithTable()
    with pytest.raises(WeightsError, match="without a value after loading: table"):
        load(net, tmp_path / "m.safetensors")


def test_check_checkpoint_accepts_meta_tensors_of_the_right_shapes():
    net = meta_net()
    shard = TensorShard({k: torch.empty(v.shape, device="meta") for k, v in reference_state().items()})
    check_checkpoint(net, [shard], identity, "tiny net")  # no error
    assert all(p.is_meta for p in net.parameters())  # checking reads and assigns nothing


def test_shard_protocol_is_implemented_by_every_reader(tmp_path):
    save_file(reference_state(), str(tmp_path / "m.safetensors"))
    torch.save(reference_state(), tmp_path / "m.pth")
    for shard in (SafetensorsShard(tmp_path / "m.safetensors"), PickleShard(tmp_path / "m.pth"),
                  TensorShard(reference_state())):
        shapes = shard.shapes()
        assert shapes == {n: tuple(t.shape) for n, t in shard.tensors()}
        assert set(shapes) == set(reference_state())



# ----------------------------------------------------------------------------------------------
# the load_* interface: sources, dtypes, devices
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32),
                                         ("BF16", torch.bfloat16), (torch.float16, torch.float16)])
def test_dtype_names_are_accepted(name, dtype):
    assert resolve_dtype(name, "cpu") == dtype


def test_fp8_is_pointed_at_the_memory_plan():
    with pytest.raises(ConfigError, match="memory plan"):
        resolve_dtype("fp8", "cpu")


def test_unknown_dtype_lists_the_accepted_ones():
    with pytest.raises(ConfigError, match="'bf16', 'fp16', 'fp32'"):
        resolve_dtype("int4", "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_a_backend_error():
    with pytest.raises(BackendUnavailableError, match="CUDA is not available"):
        load_dit("synthetic", TINY, expert="high", dtype="fp32", device="cuda")


def test_bf16_on_a_gpu_without_native_bf16_suggests_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    with pytest.raises(BackendUnavailableError, match="Tesla V100.*no native bf16.*use dtype 'fp16'"):
        resolve_dtype("bf16", "cuda")


def test_unknown_expert_is_refused():
    with pytest.raises(ConfigError, match="'high'.*'low'"):
        load_dit("synthetic", TINY, expert="middle", dtype="fp32", device="cpu")  # type: ignore[arg-type]


def test_missing_checkpoint_folder_fails_before_any_model_is_built(tmp_path, monkeypatch):
    import wan_runtime.modules.dit as dit_module

    monkeypatch.setattr(dit_module, "WanDiT", lambda *a, **k: pytest.fail("model built before the folder check"))
    with pytest.raises(WeightsError, match="does not exist"):
        load_dit(tmp_path / "missing", TINY, expert="high", dtype="fp32", device="cpu")


def test_string_paths_are_checkpoint_folders_and_only_synthetic_is_special(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_vae(str(tmp_path / "synthetic-weights"), TINY, dtype="fp32", device="cpu")


def test_unsafe_pickle_in_an_official_checkpoint_is_refused_by_load_vae(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"conv1.weight": torch.zeros(1), "x": _WritesAFile(marker)}, tmp_path / "Wan2.1_VAE.pth")
    with pytest.raises(WeightsError, match="refused"):
        load_vae(tmp_path, TINY, dtype="fp32", device="cpu")
    assert not marker.exists()
