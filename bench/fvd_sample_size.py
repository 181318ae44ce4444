"""How many videos an FVD needs: FVD, its bootstrap interval and FVD-infinity against N, on a generated pair
of feature sets whose Fréchet distance is known in closed form. Writes docs/fvd-sample-size.png and prints
the figures docs/fvd.md quotes (JSON).

    OMP_NUM_THREADS=1 python bench/fvd_sample_size.py [--repeats 20] [--check-repeats 50] [--resamples 100]

The pair: D = 400 features (the FVD's logit size), set A ~ N(0, S_a), set B ~ N(mu, S_b), S_a and S_b with
random eigenvectors and spectra decaying like k^-0.7 (B's 1.3x wider), mu ~ 0.3 N(0, I). For each N: the
FVD of ``--repeats`` independent pairs of sets (their mean and 2.5-97.5 % range: the real sampling
spread), and on one pair the bootstrap (``--resamples``) and FVD-infinity. At N = 256 and 2048 the
bootstrap std of 4 pairs is compared with the std over ``--check-repeats`` independent pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _machine import machine_info  # noqa: E402

from i3d_convert.fvd.frechet import frechet_distance_from_moments  # noqa: E402
from i3d_convert.fvd.uncertainty import bootstrap_fvd, fvd_infinity, fvd_of_features  # noqa: E402

DIM = 400
SIZES = (32, 64, 128, 256, 512, 1024, 2048)
CHECK_SIZES = (256, 2048)


class GaussianPair:
    """The two feature distributions; ``true``: their Fréchet distance (closed form)."""

    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
        self.root_a, cov_a = self._covariance(1, 1.0)
        self.root_b, cov_b = self._covariance(2, 1.3)
        self.mu = np.random.default_rng(3).standard_normal(dim) * 0.3
        self.true = float(frechet_distance_from_moments(np.zeros(dim), cov_a, self.mu, cov_b))

    def _covariance(self, seed: int, scale: float):
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((self.dim, self.dim)))
        spectrum = scale / np.arange(1, self.dim + 1) ** 0.7
        return q * np.sqrt(spectrum), (q * spectrum) @ q.T

    def draw(self, seed: int, n: int):
        rng = np.random.default_rng(seed)
        return rng.standard_normal((n, self.dim)) @ self.root_a.T, rng.standard_normal((n, self.dim)) @ self.root_b.T + self.mu


def study(pair: GaussianPair, args) -> dict:
    rows = []
    for n in SIZES:
        start = time.time()
        repeats = args.check_repeats if n in CHECK_SIZES else args.repeats
        values = np.array([fvd_of_features(*pair.draw(10_000 * n + i, n)) for i in range(repeats)])
        one = pair.draw(7, n)
        boot = bootstrap_fvd(*one, args.resamples, seed=0)
        inf = fvd_infinity(*one, seed=0)
        row = {"n": n, "repeats": repeats, "mean": float(values.mean()), "std": float(values.std(ddof=1)),
               "range95": [float(v) for v in np.percentile(values, [2.5, 97.5])], "fvd_one": fvd_of_features(*one),
               "bootstrap": boot.as_dict(), "fvd_inf": {"value": inf.value, "stderr": inf.stderr, "r2": inf.r2}}
        if n in CHECK_SIZES:
            row["bootstrap_std_over_spread"] = [bootstrap_fvd(*pair.draw(500 + p, n), args.resamples, seed=p).std
                                                / row["std"] for p in range(4)]
        rows.append(row)
        print(f"N={n}: {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    return {"true": pair.true, "dim": pair.dim, "rows": rows}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, true = result["rows"], result["true"]
    n = np.array([r["n"] for r in rows])
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=110)
    low, high = np.array([r["range95"] for r in rows]).T
    ax.fill_between(n, low, high, color="tab:blue", alpha=0.18, label="FVD of independent samples (95 % range)")
    ax.plot(n, [r["mean"] for r in rows], color="tab:blue", lw=1.5, label="FVD, mean over samples")
    ax.plot(n * 0.95, [r["fvd_one"] for r in rows], "o", ms=4, color="tab:blue", label="one sample: its FVD")
    boot = np.array([r["bootstrap"]["interval95"] for r in rows]).T  # may lie wholly above the FVD: see docs
    ax.vlines(n * 0.95, boot[0], boot[1], color="tab:orange", lw=2.5, label="same sample: --bootstrap 95 % interval")
    inf = np.array([r["fvd_inf"]["value"] for r in rows])
    err = np.array([2 * r["fvd_inf"]["stderr"] for r in rows])
    ax.errorbar(n * 1.04, inf, yerr=err, fmt="s", ms=4, color="tab:green", capsize=3,
                label="same sample: --fvd-inf (+- 2 stderr of the fit)")
    ax.axhline(true, color="black", lw=1.2, ls="--", label=f"true distance {true:.1f}")
    ax.axvline(result["dim"] + 1, color="grey", lw=0.8, ls=":")
    ax.text(result["dim"] + 1, ax.get_ylim()[0], " N = D + 1", va="bottom", fontsize=8, color="grey")
    ax.set_xscale("log", base=2)
    ax.set_xticks(n, [str(v) for v in n])
    ax.set_xlabel("videos per set (N)")
    ax.set_ylabel("FVD")
    ax.set_title(f"FVD vs sample size: two Gaussian feature sets, D = {result['dim']}", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--check-repeats", type=int, default=50)
    parser.add_argument("--resamples", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "fvd-sample-size.png")
    parser.add_argument("--replot", type=Path, help="Only draw the figure from this script's earlier JSON output.")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(args.replot.read_text()), args.out)
        return
    start = time.time()
    result = study(GaussianPair(), args)
    threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count()
    result.update(machine=machine_info(threads), seconds=round(time.time() - start),
                  args={k: str(v) for k, v in vars(args).items()})
    print(json.dumps(result, indent=1), flush=True)
    plot(result, args.out)


if __name__ == "__main__":
    main()
