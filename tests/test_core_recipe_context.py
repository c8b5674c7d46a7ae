"""Context models (ARM-CML): the batch context is a permutation-invariant mean; chunks predict alone."""

from __future__ import annotations

import numpy as np
import torch

from benchmark.core.training.backbones import create_backbone
from benchmark.core.recipe.context import ContextNet, ContextualClassifier, EvalChunks, batch_context
from benchmark.core.recipe.features import features_and_logits
from benchmark.core.recipe.network import Network
from benchmark.core.training.preprocess import Preprocessor, channel_stats
from benchmark.core.training.sampler import PlateContext


def _model() -> ContextualClassifier:
    torch.manual_seed(0)
    return ContextualClassifier(ContextNet(5, 8, 12), create_backbone("resnet_micro", in_chans=17)).eval()


def test_context_net_keeps_the_image_size_and_gives_twelve_maps():
    net = ContextNet()
    assert net(torch.randn(3, 5, 16, 16)).shape == (3, 12, 16, 16)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(5, 64, (5, 5)), (64, 64, (5, 5)),
                                                                               (64, 12, (5, 5))]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 2


def test_context_does_not_depend_on_the_order_of_the_images():
    model = _model()
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


def _view(pixels):
    from benchmark.datasets.dataset import PlateView
    return PlateView("p", pixels, pixels[:0])
