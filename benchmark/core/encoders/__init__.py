"""Pretrained and self-supervised image encoders behind one loading interface."""
