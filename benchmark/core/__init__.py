"""Shared building blocks that methods compose: sampler, preprocessing, backbones, BN statistics,
the training loop, TVN and encoder backends. Each module has one job."""
