"""Context models (ARM-CML): the batch context is a permutation-invariant mean; chunks predict alone; a pooled
context network gives maps of the image's size, and pool 1 is the full-resolution network bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.core.training.backbones import create_backbone
from benchmark.core.recipe.context import ContextNet, ContextualClassifier, EvalChunks, batch_context
from benchmark.errors import MethodError
from benchmark.core.recipe.features import features_and_logits
from benchmark.core.recipe.network import Network
from benchmark.core.training.preprocess import Preprocessor, channel_stats
from benchmark.core.training.sampler import PlateContext


def _model(pool: int = 1) -> ContextualClassifier:
    torch.manual_seed(0)
    return ContextualClassifier(ContextNet(5, 8, 12, pool=pool), create_backbone("resnet_micro", in_chans=17)).eval()


def test_context_net_keeps_the_image_size_and_gives_twelve_maps():
    net = ContextNet()
    assert net(torch.randn(3, 5, 16, 16)).shape == (3, 12, 16, 16)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(5, 64, (5, 5)), (64, 64, (5, 5)),
                                                                               (64, 12, (5, 5))]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 2


@pytest.mark.parametrize("pool", [1, 4])
def test_context_does_not_depend_on_the_order_of_the_images(pool):
    model = _model(pool)
    x = torch.randn(10, 5, 16, 16)
    order = torch.randperm(10)
    with torch.no_grad():
        a, b = batch_context(model.context_net, x), batch_context(model.context_net, x[order])
        assert torch.allclose(a, b, atol=1e-6)
        assert torch.allclose(model(x)[order], model(x[order]), atol=1e-5)  # same context, same predictions


def test_classifier_sees_seventeen_channels_and_features_reach_its_head():
    model = _model()
    seen = []
    model.classifier.conv1.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    features, logits = features_and_logits(model, torch.randn(4, 5, 16, 16))
    assert seen == [17] and logits.shape == (4, 8) and features.shape == (4, model.classifier.num_features)


def test_a_chunk_is_predicted_from_its_own_context_only():
    model = _model()
    pixels = np.random.default_rng(0).integers(0, 255, size=(12, 5, 16, 16), dtype=np.uint8)
    net = Network(model, Preprocessor(channel_stats(pixels), 16, "cpu", channels_last=False), 256, "test")
    state = EvalChunks(PlateContext(6)).adapt(net, _view(pixels))
    first = state.logits(net, net.pixels(pixels))
    other = np.concatenate([pixels[:6], 255 - pixels[6:]])  # the second chunk replaced
    again = state.logits(net, net.pixels(other))
    assert torch.allclose(first[:6], again[:6], atol=1e-6) and not torch.allclose(first[6:], again[6:])
    with torch.no_grad():
        alone = model(net.inputs(net.pixels(pixels[:6])))
    assert torch.allclose(first[:6], alone, atol=1e-6)


def test_a_pooled_context_net_gives_maps_of_the_image_size_from_the_pooled_image():
    torch.manual_seed(0)
    net = ContextNet(pool=4).eval()
    x = torch.randn(3, 5, 40, 40)
    with torch.no_grad():
        maps, pooled = net(x), net.pooled_maps(x)
        assert pooled.shape == (3, 12, 10, 10) and maps.shape == (3, 12, 40, 40)
        assert torch.equal(pooled, net.layers(F.avg_pool2d(x, 4)))  # the same convolutions, on the pooled image
    # nearest neighbour: every pixel carries the value of the pooled cell it was averaged into
    assert torch.equal(maps, pooled.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))


def test_the_pooled_batch_context_is_the_batch_mean_of_the_upsampled_maps():
    model = _model(pool=4)
    x = torch.randn(7, 5, 16, 16)
    with torch.no_grad():
        context = batch_context(model.context_net, x)  # averaged at 4x4, upsampled once
        assert context.shape == (1, 12, 16, 16)
        assert torch.allclose(context, model.context_net(x).mean(0, keepdim=True), atol=1e-6)


def test_pool_one_is_the_full_resolution_context_network_bit_for_bit():
    """``pool=1`` neither pools nor upsamples: the logits of the network as it was before pooling existed."""
    model = _model(pool=1)
    x = torch.randn(6, 5, 16, 16)
    with torch.no_grad():
        maps = model.context_net.layers(x)  # the three convolutions at full resolution
        before = model.classifier(torch.cat([x, maps.mean(dim=0, keepdim=True).expand(6, -1, -1, -1)], dim=1))
        assert torch.equal(model(x), before)
        assert torch.equal(model.context_net(x), maps)


def test_pooling_adds_no_parameters():
    """The same seed gives the same weights at any pool: only the resolution of the context network differs."""
    full, pooled = _model(1).state_dict(), _model(4).state_dict()
    assert full.keys() == pooled.keys() and all(torch.equal(full[k], pooled[k]) for k in full)


def test_a_pool_that_does_not_divide_the_image_is_a_method_error():
    net = ContextNet(pool=3)
    with pytest.raises(MethodError, match=r"context_pool 3 does not divide the input, 16x16 px.*\[1, 2, 4, 8, 16\]"):
        net(torch.randn(2, 5, 16, 16))
    with pytest.raises(MethodError, match="context_pool must be >= 1"):
        ContextNet(pool=0)


def _view(pixels):
    from benchmark.datasets.dataset import PlateView
    return PlateView("p", pixels, pixels[:0])
