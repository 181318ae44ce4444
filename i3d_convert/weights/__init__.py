"""Weights: the release registry, the one cache and the one model factory."""
