"""Cells in an image: nuclei and cell segmentation and per-image cell features, shared by the cell-level baselines."""
