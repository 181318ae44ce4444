"""Exact FVD, in one package: the network, TF-GAN's Fréchet distance, stats files, named protocols.

``network``: TF-Hub's i3d-kinetics-400 as :class:`InceptionI3d` and FVD's preprocessing;
``protocols``: the named preprocessing presets; ``inputs``: videos and clip selection;
``compute``: features and the metric object; ``stats``: stats files; ``runner``: stats over a
folder on torchrun; ``uncertainty``: bootstrap, FVD-infinity, KVD; ``compare``: what ``fvd`` runs
(settings taken from a stats file, checks, sample-size warnings).

``fvd(videos_a, videos_b)`` reproduces google-research's ``frechet_video_distance`` (TF1 resize,
TF-Hub i3d-kinetics-400 logits, TF-GAN's distance); see docs/fvd.md.
"""

from .network import fvd_i3d, preprocess_for_fvd
from .compute import FVDFeatures, FVDMetric, distance, fvd, stats_from_videos
from .frechet import frechet_classifier_distance_from_activations, frechet_distance_from_moments
from .protocols import PROTOCOLS, Protocol, get_protocol
from .stats import FVDStats, frechet_distance, load_stats, save_stats
from .uncertainty import bootstrap_fvd, fvd_infinity, kernel_distance

__all__ = ["FVDFeatures", "FVDMetric", "FVDStats", "PROTOCOLS", "Protocol", "distance", "frechet_classifier_distance_from_activations",
           "frechet_distance", "frechet_distance_from_moments", "fvd", "fvd_i3d", "get_protocol", "load_stats", "preprocess_for_fvd", "save_stats",
           "stats_from_videos", "bootstrap_fvd", "fvd_infinity", "kernel_distance"]
