"""The Fréchet distance exactly as TF-GAN computes it (``frechet_classifier_distance_from_activations``).

TF-GAN 2.x (``tensorflow_gan/python/eval/classifier_metrics.py``), operation by operation:

1. activations cast to float64 (when ``activations1`` is not float64 already);
2. means ``reduce_mean(axis=0)``;
3. covariance ``n / (n - 1) * (x_c^T x_c / n)`` (``tfp.stats.covariance`` rescaled: N-1);
4. ``trace_sqrt_product``: ``A = U diag(s') V^T`` from ``svd(sigma1)`` with ``s' = s`` where
   ``s < 1e-10`` (kept, not rooted) else ``sqrt(s)``; then ``trace(sqrtm_svd(A @ (sigma2 @ A)))``;
5. ``trace(sigma1 + sigma2) - 2 * that + sum((m1 - m2) ** 2)``;
6. the result cast back to the dtype of ``activations1`` (float32 logits give a float32 FVD).

``compute_dtype=float32`` runs steps 4-5 in float32 with ``torch.linalg.svd`` instead, as the
PyTorch ports in VideoGPT and TATS do (their FVD is computed in float32 on the device).
"""

from __future__ import annotations

import numpy as np
import torch

from i3d_convert.errors import I3DConvertError

#: TF-GAN's ``eps`` of ``_symmetric_matrix_square_root``: singular values below it are kept, not rooted.
SQRT_EPS = 1e-10


def symmetric_matrix_square_root(mat: np.ndarray, eps: float = SQRT_EPS) -> np.ndarray:
    """SVD square root of a symmetric PSD ``[D, D]`` matrix with TF-GAN's semantics (small values kept)."""
    if mat.dtype == np.float32:
        u, s, vt = (t.numpy() for t in torch.linalg.svd(torch.from_numpy(np.ascontiguousarray(mat))))
    else:
        try:
            u, s, vt = np.linalg.svd(mat)  # numpy returns V^T where TF returns V
        except np.linalg.LinAlgError:  # LAPACK's gesdd fails to converge on some rank-deficient matrices
            u, s, vt = _svd_of_symmetric(mat)
    s_root = np.where(s < eps, s, np.sqrt(s)).astype(mat.dtype)
    return (u * s_root[np.newaxis, :]) @ vt


def _svd_of_symmetric(mat: np.ndarray) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
    """The SVD of a symmetric matrix from its eigendecomposition: ``s = |w|``, ``u = v``, ``vt = (v * sign(w))^T``."""
    w, v = np.linalg.eigh(0.5 * (mat + mat.T))
    order = np.argsort(-np.abs(w))
    w, v = w[order], v[:, order]
    return v, np.abs(w), (v * np.where(w < 0, -1.0, 1.0)).T


def trace_sqrt_product(sigma: np.ndarray, sigma_v: np.ndarray) -> np.floating:
    """``trace(sqrtm(sigma @ sigma_v))`` as TF-GAN forms it: ``trace(sqrtm_svd(A @ (sigma_v @ A)))``,
    ``A = sqrtm_svd(sigma)``."""
    root = symmetric_matrix_square_root(sigma)
    return np.trace(symmetric_matrix_square_root(root @ (sigma_v @ root)))


def frechet_distance_from_moments(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                                  compute_dtype: "np.dtype | type" = np.float64) -> np.floating:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): ``mu`` ``[D]``, ``sigma`` ``[D, D]``.

    TF-GAN's expression tree, evaluated in ``compute_dtype`` (float64, or float32 like VideoGPT/TATS).
    """
    dtype = np.dtype(compute_dtype)
    mu1, mu2, sigma1, sigma2 = (np.asarray(a, dtype=dtype) for a in (mu1, mu2, sigma1, sigma2))
    if mu1.ndim != 1 or mu1.shape != mu2.shape or sigma1.shape != (mu1.size, mu1.size) or sigma1.shape != sigma2.shape:
        raise I3DConvertError(f"moment shapes do not match: mu {list(mu1.shape)} / {list(mu2.shape)}, "
                              f"sigma {list(sigma1.shape)} / {list(sigma2.shape)}")
    trace_term = np.trace(sigma1 + sigma2) - dtype.type(2.0) * trace_sqrt_product(sigma1, sigma2)
    diff = mu1 - mu2
    return dtype.type(trace_term + np.sum(diff * diff))


def tfgan_covariance(x: np.ndarray) -> np.ndarray:
    """Unbiased (N-1) covariance of float64 ``x`` ``[N, D]`` in TF-GAN 2.x's order of operations."""
    n = np.float64(x.shape[0])
    centred = x - np.mean(x, axis=0, keepdims=True)
    return (n / (n - 1.0)) * ((centred.T @ centred) / n)


def frechet_classifier_distance_from_activations(activations1: np.ndarray, activations2: np.ndarray) -> np.floating:
    """TF-GAN's function of the same name: ``[N1, D]`` and ``[N2, D]`` activations -> the distance,
    computed in float64 and returned in the dtype of ``activations1`` (float32 in, float32 out)."""
    a1, a2 = np.asarray(activations1), np.asarray(activations2)
    if a1.ndim != 2 or a2.ndim != 2 or a1.shape[1] != a2.shape[1]:
        raise I3DConvertError(f"activations must be [N, D] with the same D, got {list(a1.shape)} and {list(a2.shape)}")
    if min(len(a1), len(a2)) < 2:
        raise I3DConvertError(f"each set needs at least 2 samples for a covariance, got {len(a1)} and {len(a2)}")
    out_dtype = a1.dtype
    a1, a2 = a1.astype(np.float64, copy=False), a2.astype(np.float64, copy=False)
    fd = frechet_distance_from_moments(np.mean(a1, axis=0), tfgan_covariance(a1), np.mean(a2, axis=0), tfgan_covariance(a2))
    return fd if out_dtype == np.float64 else np.asarray(fd).astype(out_dtype)[()]


__all__ = ["SQRT_EPS", "symmetric_matrix_square_root", "trace_sqrt_product", "frechet_distance_from_moments",
           "tfgan_covariance", "frechet_classifier_distance_from_activations"]
