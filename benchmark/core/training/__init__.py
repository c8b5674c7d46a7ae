"""Training a network: the loop, data loading, preprocessing, backbones, BN statistics, DDP and the model cache."""
