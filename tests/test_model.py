"""The PyTorch model's building blocks reproduce TensorFlow's padding and pooling rules."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from i3d_convert import architecture as arch
from i3d_convert.names.tf1 import mapping_table
from i3d_convert.models.i3d import InceptionI3d, MaxPool3dSame, Unit3D


def _explicit_same(x, kernel, stride, value):
    pads = [arch.tf_same_padding(n, k, s) for n, k, s in zip(x.shape[2:], kernel, stride)]
    return F.pad(x, [p for ba in reversed(pads) for p in ba], value=value)


def test_tf_same_padding_puts_the_odd_pixel_at_the_end():
    assert arch.tf_same_padding(224, 7, 2) == (2, 3)
    assert arch.tf_same_padding(225, 7, 2) == (3, 3)
    assert arch.tf_same_padding(56, 3, 2) == (0, 1)
    assert arch.tf_same_padding(7, 2, 2) == (0, 1)
    assert arch.tf_same_padding(8, 3, 1) == (1, 1)


@pytest.mark.parametrize("kernel,stride", [((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (2, 2, 2)), ((2, 2, 2), (2, 2, 2)), ((3, 3, 3), (1, 1, 1))])
def test_maxpool_same_equals_pooling_over_neg_inf_padding(kernel, stride):
    pool = MaxPool3dSame(kernel, stride)
    for t, h, w in itertools.product((1, 2, 3, 4, 5), (5, 6, 7, 8), (2, 9)):
        # All-negative input: zero padding would win here, -inf padding never does.
        x = -torch.rand(1, 2, t, h, w, dtype=torch.float64) - 0.5
        expected = F.max_pool3d(_explicit_same(x, kernel, stride, float("-inf")), kernel, stride)
        got = pool(x)
        assert got.shape == expected.shape, (t, h, w)
        assert torch.equal(got, expected), (t, h, w)


@pytest.mark.parametrize("size", [(4, 9, 9), (5, 10, 11), (8, 16, 16), (1, 7, 8)])
def test_strided_conv_uses_tf_same_padding(size):
    torch.manual_seed(0)
    unit = Unit3D(3, 4, (7, 7, 7), (2, 2, 2), batch_norm=False, relu=False).double()
    x = torch.randn((1, 3) + size, dtype=torch.float64)
    expected = F.conv3d(_explicit_same(x, (7, 7, 7), (2, 2, 2), 0.0), unit.conv.weight, None, (2, 2, 2))
    torch.testing.assert_close(unit(x), expected, rtol=0, atol=1e-12)


def test_stride_one_conv_pads_symmetrically_without_extra_tensor():
    unit = Unit3D(2, 3, (3, 3, 3)).double()
    assert unit.conv.padding == (1, 1, 1)
    x = torch.randn(1, 2, 3, 5, 6, dtype=torch.float64)
    expected = F.conv3d(_explicit_same(x, (3, 3, 3), (1, 1, 1), 0.0), unit.conv.weight)
    torch.testing.assert_close(unit.conv(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("in_channels,num_classes", [(3, 400), (2, 400), (3, 600)])
def test_state_dict_keys_mirror_deepmind_names(in_channels, num_classes):
    model = InceptionI3d(num_classes, in_channels)
    table = mapping_table(in_channels, num_classes)
    assert len(table) == 230
    expected = {rule.torch_key: rule.torch_shape for rule in table.values()}
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected
    assert table["Mixed_3b/Branch_1/Conv3d_0b_3x3/conv_3d/w"].torch_key == "Mixed_3b.Branch_1.Conv3d_0b_3x3.conv.weight"
    assert table["Mixed_5b/Branch_2/Conv3d_0a_3x3/batch_norm/beta"].torch_key == "Mixed_5b.Branch_2.Conv3d_0a_3x3.bn.bias"


def test_endpoints_have_deepmind_shapes():
    model = InceptionI3d().eval()
    with torch.inference_mode():
        out = model.forward_endpoints(torch.zeros(1, 3, 16, 224, 224))
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert list(shapes) == list(arch.ENDPOINTS)
    assert shapes["Conv3d_1a_7x7"] == (1, 64, 8, 112, 112)
    assert shapes["MaxPool3d_2a_3x3"] == (1, 64, 8, 56, 56)
    assert shapes["MaxPool3d_3a_3x3"] == (1, 192, 8, 28, 28)
    assert shapes["Mixed_3c"] == (1, 480, 8, 28, 28)
    assert shapes["MaxPool3d_4a_3x3"] == (1, 480, 4, 14, 14)
    assert shapes["Mixed_4f"] == (1, 832, 4, 14, 14)
    assert shapes["MaxPool3d_5a_2x2"] == (1, 832, 2, 7, 7)
    assert shapes["Mixed_5c"] == (1, 1024, 2, 7, 7)
    assert shapes["Logits"] == (1, 400)
    for name, channels in arch.endpoint_channels().items():
        assert shapes[name][1] == channels


def test_final_endpoint_builds_a_truncated_network():
    model = InceptionI3d(final_endpoint="Mixed_4b").eval()
    assert not hasattr(model, "Mixed_4c") and not hasattr(model, "Logits")
    with torch.inference_mode():
        y = model(torch.zeros(1, 3, 8, 64, 64))
    assert y.shape == (1, 512, 2, 4, 4)
    with pytest.raises(ValueError, match="unknown endpoint"):
        InceptionI3d(final_endpoint="Mixed_9z")


def test_wrong_input_layout_is_a_clear_error():
    with pytest.raises(ValueError, match="NCTHW"):
        InceptionI3d()(torch.zeros(1, 16, 224, 224, 3))


def test_batch_norm_has_no_scale_and_eps_1e_3():
    model = InceptionI3d()
    bn = model.Conv3d_1a_7x7.bn
    assert bn.eps == 1e-3
    assert not any(k.endswith("bn.weight") for k in model.state_dict())


def _calibrated_model(**kwargs):
    from i3d_convert.weights.synthetic import calibrated_state_dict

    model = InceptionI3d(**kwargs).eval()
    model.load_state_dict(calibrated_state_dict(seed=4, calibration_shape=(9, 224, 224)), strict=True)
    return model


def test_folded_batch_norm_inference_path_matches_plain_modules():
    """The fast path (eval + autograd off: folded BN, channels_last, oneDNN) computes the
    same function as the plain conv -> batch norm -> ReLU modules that training uses."""
    from i3d_convert.verification.metrics import difference
    from i3d_convert.weights.synthetic import random_clip

    fused = _calibrated_model().double()
    plain = _calibrated_model(fuse_bn=False).double()
    clip = random_clip((1, 3, 9, 224, 224), seed=2, dtype=torch.float64)
    with torch.inference_mode():
        fast = fused.forward_endpoints(clip)
        slow = plain.forward_endpoints(clip)
    with torch.no_grad():
        grad_path = fused.forward_endpoints(clip.requires_grad_(False))  # no_grad: also the fast path
    with torch.enable_grad():
        autograd = fused.forward_endpoints(clip.clone().requires_grad_(True))
    for name in fast:
        assert difference(fast[name], slow[name]).rel_l2 < 1e-12, name
        assert difference(autograd[name].detach(), slow[name]).rel_l2 < 1e-12, name
        assert torch.equal(grad_path[name], fast[name]), name
    # float32: folding rounds differently, so compare each to the float64 result: the
    # fast path's round-off must stay within 3x the plain modules' (FLOAT32_FLOOR_FACTOR).
    from i3d_convert.verification.tolerances import FLOAT32_FLOOR_FACTOR, FLOAT32_LOGITS_ATOL

    exact = slow["Logits"]
    fused32, plain32 = fused.float(), plain.float()
    with torch.inference_mode():
        fast32, slow32 = fused32(clip.float()), plain32(clip.float())
    err_fast, err_slow = difference(fast32, exact), difference(slow32, exact)
    assert err_fast.rel_l2 <= FLOAT32_FLOOR_FACTOR * err_slow.rel_l2, (err_fast, err_slow)
    assert difference(fast32, slow32).max_abs <= FLOAT32_LOGITS_ATOL


def test_folded_weights_follow_weight_updates():
    model = _calibrated_model().double()
    clip = torch.zeros(1, 3, 9, 224, 224, dtype=torch.float64)
    with torch.inference_mode():
        before = model(clip)
    with torch.no_grad():
        model.Logits.classifier.conv.bias.add_(1.0)
        model.Mixed_5c.Branch_0.Conv3d_0a_1x1.bn.running_mean.zero_()
    reference = _calibrated_model(fuse_bn=False).double()
    reference.load_state_dict(model.state_dict())
    with torch.inference_mode():
        after = model(clip)
        expected = reference(clip)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, rtol=1e-12, atol=1e-12)


def test_model_built_under_inference_mode_still_runs_exactly():
    """Parameters made inside inference_mode have no version counter: the fold is recomputed, not cached."""
    with torch.inference_mode():
        model = InceptionI3d(final_endpoint="Mixed_3b").double().eval()
        x = torch.randn(1, 3, 4, 32, 32, dtype=torch.float64)
        a = model(x)
        model.Conv3d_1a_7x7.bn.running_mean.add_(1.0)
        b = model(x)
    reference = InceptionI3d(final_endpoint="Mixed_3b", fuse_bn=False).double().eval()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = reference(x)
    assert not torch.equal(a, b)
    torch.testing.assert_close(b, expected, rtol=1e-12, atol=1e-12)
