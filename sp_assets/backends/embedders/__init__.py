"""Embedders: whole-image embeddings for preservation checks and the probe."""
