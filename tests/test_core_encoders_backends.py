"""Pretrained-encoder backends: tiny random timm / transformers / OpenPhenom-like models saved to disk
and loaded through the same spec strings a user passes to ``fm_tvn`` (no hub access)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmark.core.encoders.loading import load_encoder
from benchmark.errors import BenchError


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _images(n: int = 3, size: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 5, size, size), dtype=np.uint8)


@pytest.fixture(scope="module")
def timm_dir(tmp_path_factory):
    import timm
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1, num_classes=4)
    folder = tmp_path_factory.mktemp("timm-vit")
    save_for_hf(model, str(folder), model_args=dict(img_size=32, depth=1), safe_serialization=True)
    return folder


def test_timm_folder_embeds_each_channel_separately(timm_dir):
    encoder = load_encoder(f"timm:{timm_dir}")
    assert encoder.dim == 5 * 192
    images = _images()
    emb = encoder.embed(images)
    assert emb.shape == (3, 5 * 192) and emb.dtype == np.float32 and np.isfinite(emb).all()
    changed = images.copy()
    changed[:, 2] = 255 - changed[:, 2]  # only AGP changes: only its block of the embedding moves
    delta = np.abs(encoder.embed(changed) - emb).reshape(3, 5, 192).max(axis=(0, 2))
    assert delta[2] > 1e-3 and np.all(delta[[0, 1, 3, 4]] == 0)
    # one channel repeated to RGB is embedded like the same grey image
    grey = np.repeat(images[:, :1], 5, axis=1)
    blocks = encoder.embed(grey).reshape(3, 5, 192)
    np.testing.assert_allclose(blocks[:, 0], blocks[:, 4], rtol=1e-5, atol=1e-5)


def test_timm_name_at_checkpoint_matches_the_folder(timm_dir, tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    file = tmp_path / "resnet.safetensors"
    save_file(model.state_dict(), str(file))
    encoder = load_encoder(f"timm:resnet10t@{file}")
    assert encoder.dim == 5 * model.num_features
    assert encoder.embed(_images(2)).shape == (2, 5 * model.num_features)


def test_timm_errors_name_the_path_and_what_was_expected(timm_dir, tmp_path):
    with pytest.raises(BenchError, match=r"encoder path .*nowhere does not exist; expected a timm model folder"):
        load_encoder(f"timm:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match=r"empty is not a timm model folder \(no config.json\)"):
        load_encoder(f"timm:{tmp_path / 'empty'}")
    with pytest.raises(BenchError, match="needs a local path: use 'timm:<path>'"):
        load_encoder("timm")
    # a ResNet checkpoint under a ViT config: another architecture
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text((timm_dir / "config.json").read_text())
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model("resnet10t", pretrained=False).state_dict(), str(other / "model.safetensors"))
    with pytest.raises(BenchError, match=r"other holds weights of another architecture than timm 'vit_tiny_patch16_224'"):
        load_encoder(f"timm:{other}")
    with pytest.raises(BenchError, match=r"holds weights of another architecture than timm 'resnet18'"):
        load_encoder(f"timm:resnet18@{timm_dir / 'model.safetensors'}")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8, num_channels=3)
    folder = tmp_path_factory.mktemp("hf-vit")
    ViTModel(config).save_pretrained(folder)
    return folder


def test_hf_folder_loads_offline_and_embeds(hf_dir):
    encoder = load_encoder(f"hf:{hf_dir}")
    assert encoder.dim == 5 * 32
    emb = encoder.embed(_images(size=40))
    assert emb.shape == (3, 160) and np.isfinite(emb).all()
    np.testing.assert_array_equal(emb, encoder.embed(_images(size=40)))  # frozen and deterministic


def test_hf_five_channel_model_gets_the_image_whole(tmp_path):
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       image_size=16, patch_size=8, num_channels=5)
    ViTModel(config).save_pretrained(tmp_path)
    encoder = load_encoder(f"hf:{tmp_path}")
    assert encoder.dim == 16 and encoder.embed(_images(2)).shape == (2, 16)


def test_hf_errors_name_the_path_and_what_was_expected(hf_dir, tmp_path):
    with pytest.raises(BenchError, match=r"encoder path .*missing does not exist; expected a transformers model folder"):
        load_encoder(f"hf:{tmp_path / 'missing'}")
    (tmp_path / "noconfig").mkdir()
    with pytest.raises(BenchError, match=r"noconfig has no config.json; expected a transformers model folder"):
        load_encoder(f"hf:{tmp_path / 'noconfig'}")
    # ViT weights under a ConvNeXt config: another architecture
    from transformers import ConvNextConfig

    other = tmp_path / "other"
    other.mkdir()
    ConvNextConfig(num_channels=3, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1]).save_pretrained(other)
    (other / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes())
    with pytest.raises(BenchError, match=r"other holds weights of another architecture than its config \(convnext\)"):
        load_encoder(f"hf:{other}")
    (other / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(BenchError, match=r"transformers cannot load .*other"):
        load_encoder(f"hf:{other}")


FAKE_OPENPHENOM = '''
import torch
from torch import nn

class MAEModel(nn.Module):
    """Stand-in with OpenPhenom's interface: from_pretrained(dir), predict(uint8 (N, C, 256, 256))."""
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(1, 8)

    @classmethod
    def from_pretrained(cls, path):
        return cls()

    def predict(self, imgs):
        assert imgs.dtype == torch.uint8 and imgs.shape[-2:] == (256, 256)
        return self.proj(imgs.float().mean(dim=(2, 3)).mean(dim=1, keepdim=True))
'''


def test_openphenom_interface_and_errors(tmp_path):
    folder = tmp_path / "OpenPhenom"
    with pytest.raises(BenchError, match=r"OpenPhenom does not exist; expected the OpenPhenom folder"):
        load_encoder(f"openphenom:{folder}")
    folder.mkdir()
    with pytest.raises(BenchError, match=r"OpenPhenom has no huggingface_mae.py; expected the OpenPhenom folder"):
        load_encoder(f"openphenom:{folder}")
    (folder / "huggingface_mae.py").write_text(FAKE_OPENPHENOM)
    encoder = load_encoder(f"openphenom:{folder}")
    assert encoder.dim == 8
    assert encoder.embed(_images(2, size=64)).shape == (2, 8)
    assert encoder.embed(_images(2, size=300)).shape == (2, 8)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "huggingface_mae.py").write_text("import no_such_package_for_openphenom\n")
    with pytest.raises(BenchError, match="needs a package that is not installed"):
        load_encoder(f"openphenom:{broken}")
