"""Shared building blocks that methods compose. Each module has one job.

The BN methods' axes: ``sampler`` (which images form a training mini-batch),
``bn_policies`` (where BN statistics come from in training, validation and test),
``tta`` (parameters that change on a target plate), ``training`` (the loop and its
loss), tied together by ``recipe``; with ``loader``, ``validation``, ``network``,
``features``, ``bn``, ``preprocess``, ``backbones``, ``accel``. Domain adaptation:
``coral`` (the CORAL penalty), ``gradient_reversal`` (DANN), ``context`` (ARM-CML's context
network and per-chunk prediction). Profile-level: ``tvn``, encoders and their backends."""
