"""Encoder backends: registry, errors, memoised embeddings, the shipped SSL encoder's format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.core.training.backbones import create_backbone
from benchmark.core.encoders.loading import ModuleEncoder, load_encoder, register_encoder_backend
from benchmark.core.encoders.ssl import save_encoder
from benchmark.errors import BenchError, MethodError, UnknownNameError


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match=r"unknown encoder backend 'platebench-sl'\. Valid encoder "
                                               r"backends: .*platebench-ssl.*Did you mean 'platebench-ssl'\?"):
        load_encoder("platebench-sl")


def test_unknown_backbone_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="unknown backbone 'resnet5'. Valid backbones: resnet18, resnet50"):
        create_backbone("resnet5")


def test_a_backend_name_is_registered_once():
    @register_encoder_backend("test-dup")
    def first(argument, device):  # pragma: no cover - never loaded
        raise AssertionError

    with pytest.raises(BenchError, match="encoder backend 'test-dup' is registered twice"):
        @register_encoder_backend("test-dup")
        def second(argument, device):  # pragma: no cover
            raise AssertionError


def test_missing_weights_say_how_to_regenerate_them(tmp_path):
    with pytest.raises(MethodError, match=r"not found; regenerate them with `bench methods pretrain-encoder"):
        load_encoder(f"platebench-ssl:{tmp_path / 'none.safetensors'}")


def test_saved_encoder_loads_through_its_spec_and_embeds_frozen(tmp_path):
    torch.manual_seed(0)
    backbone = create_backbone("resnet_micro", num_classes=0).eval()
    path = tmp_path / "enc.safetensors"
    save_encoder(path, backbone, {"backbone": "resnet_micro", "dim": 128, "channel_mean": [100.0] * 5,
                                  "channel_std": [50.0] * 5})
    encoder = load_encoder(f"platebench-ssl:{path}")
    images = np.random.default_rng(0).integers(0, 256, size=(6, 5, 24, 24), dtype=np.uint8)
    emb = encoder.embed(images, batch_size=4)
    assert emb.shape == (6, 128) and emb.dtype == np.float32 and encoder.dim == 128
    np.testing.assert_allclose(encoder.embed(images[3:5]), emb[3:5], rtol=1e-5, atol=1e-6)  # frozen, per image
    assert not any(p.requires_grad for p in encoder.module.parameters())


def test_saved_encoder_is_world_readable_and_leaves_no_partial_files(tmp_path):
    backbone = create_backbone("resnet_micro", num_classes=0).eval()
    meta = {"backbone": "resnet_micro", "dim": 128, "channel_mean": [100.0] * 5, "channel_std": [50.0] * 5}
    weights, config = save_encoder(tmp_path / "enc.safetensors", backbone, meta)
    assert weights.stat().st_mode & 0o777 == 0o644  # safetensors alone writes 0600: a shipped file others must read
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc.json", "enc.safetensors"]


def test_module_encoder_rejects_non_uint8_images():
    encoder = ModuleEncoder("test", torch.nn.Flatten(), 5 * 4, lambda x: torch.as_tensor(x, dtype=torch.float32))
    with pytest.raises(BenchError, match=r"encoder test takes uint8 images \(N, C, H, W\), got float64"):
        encoder.embed(np.zeros((2, 5, 2, 2)))


def test_weights_digest_identifies_the_weights_not_the_spec(tmp_path):
    torch.manual_seed(0)
    backbone = create_backbone("resnet_micro", num_classes=0).eval()
    meta = {"backbone": "resnet_micro", "dim": 128, "channel_mean": [100.0] * 5, "channel_std": [50.0] * 5}
    save_encoder(tmp_path / "a.safetensors", backbone, meta)
    save_encoder(tmp_path / "copy.safetensors", backbone, meta)
    with torch.no_grad():
        next(backbone.parameters())[0, 0, 0, 0] += 1e-3  # one weight changed
    save_encoder(tmp_path / "changed.safetensors", backbone, meta)
    digest = {n: load_encoder(f"platebench-ssl:{tmp_path / n}.safetensors").weights_digest
              for n in ("a", "copy", "changed")}
    assert len(digest["a"]) == 64 and digest["a"] == digest["copy"] != digest["changed"]
    assert ModuleEncoder("x", backbone, 128, torch.as_tensor).weights_digest == digest["changed"]
