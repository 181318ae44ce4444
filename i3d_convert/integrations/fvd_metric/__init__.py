"""Exact FVD: TF-GAN's Fréchet distance, streaming stats files, named protocols, a metric object.

``fvd(videos_a, videos_b)`` reproduces google-research's ``frechet_video_distance`` (TF1 resize,
TF-Hub i3d-kinetics-400 logits, TF-GAN's distance); see docs/fvd.md.
"""

from .compute import FVDFeatures, FVDMetric, distance, fvd, stats_from_videos
from .frechet import frechet_classifier_distance_from_activations, frechet_distance_from_moments
from .protocols import PROTOCOLS, Protocol, get_protocol
from .stats import FVDStats, frechet_distance, load_stats, save_stats

__all__ = ["FVDFeatures", "FVDMetric", "FVDStats", "PROTOCOLS", "Protocol", "distance", "frechet_classifier_distance_from_activations",
           "frechet_distance", "frechet_distance_from_moments", "fvd", "get_protocol", "load_stats", "save_stats",
           "stats_from_videos"]
