"""Shared building blocks that methods compose, in five packages whose imports only point down the list.

``training`` (bottom): the loop and its loss, loader, sampler, preprocessing, backbones, BN statistics,
DDP, accelerator settings and the model cache. ``recipe``: the BN-method taxonomy, a recipe's axes
(training batches, training BN, loss, validation and test BN), TTA, context networks, CORAL and gradient
reversal. ``cells``: nuclei and cell segmentation and per-image cell features. ``encoders``: pretrained
and self-supervised image encoders and the cell-count featuriser behind one loader. ``profiles``
(top): features to well profiles, profile corrections, TVN, intensity statistics, correction metrics."""
