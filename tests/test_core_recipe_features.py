"""Features for training losses on features: the classifier head's input, from the same forward pass."""

from __future__ import annotations

import torch

from benchmark.core.training.accel import Autocast
from benchmark.core.training.backbones import create_backbone
from benchmark.core.recipe.features import classifier_head, features_and_logits


def test_features_are_what_the_head_maps_to_the_logits_and_carry_gradient():
    torch.manual_seed(0)
    model = create_backbone("resnet_micro").eval()
    x = torch.randn(4, 5, 16, 16)
    features, logits = features_and_logits(model, x)
    assert features.shape == (4, model.num_features) and features.requires_grad
    torch.testing.assert_close(classifier_head(model)(features), logits)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x))
    features.pow(2).sum().backward()
    assert model.conv1.weight.grad is not None and not model.fc._forward_pre_hooks  # the hook is removed


def test_the_head_is_found_inside_the_autocast_wrapper():
    model = create_backbone("resnet_micro")
    assert classifier_head(Autocast(model)) is model.fc
