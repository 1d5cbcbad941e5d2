import pytest
import torch

from pqlib.models import ARCHITECTURES, batchnorm_inputs, build


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("channels,size", [(1, 8), (1, 28), (3, 32)])
def test_shapes(arch, channels, size):
    model = build(arch, channels, 10, size).eval()
    x = torch.rand(2, channels, size, size)
    f = model.features(x)
    assert f.shape == (2, model.feature_dim)
    assert model(x).shape == (2, 10)


def test_convnet_pads_28_to_32():
    # 28×28 → 32 → 16 → 8 → 4: 128·4·4 features, as in the reference ConvNet-3
    assert build("convnet", 1, 10, 28).feature_dim == 128 * 4 * 4


def test_instance_norm_makes_samples_independent():
    model = build("convnet", 1, 10, 28).train()
    x = torch.rand(4, 1, 28, 28)
    alone = model(x[:1])
    together = model(x)[:1]
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)


def test_batchnorm_inputs_records_every_bn_layer():
    model = build("convnet_bn", 1, 10, 28).eval()
    with batchnorm_inputs(model) as rec:
        model(torch.rand(3, 1, 28, 28))
    assert len(rec.layers) == len(rec.inputs) == 3 and [t.shape[1] for t in rec.inputs] == [128] * 3
    kept = list(rec.inputs)
    model(torch.rand(2, 1, 28, 28))  # after the block the hooks are gone
    assert all(a is b for a, b in zip(rec.inputs, kept))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        build("vgg", 1, 10, 28)
    with pytest.raises(ValueError, match="image_size=4"):
        build("convnet", 1, 10, 4)
    with pytest.raises(ValueError, match="channels=2"):
        build("convnet", 2, 10, 28)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("side", [32, 8, 5])
def test_avgpool2_equals_avg_pool2d_forward_and_backward(dtype, side):
    """The eager matrix-product pooling is avg_pool2d bit for bit (odd sides fall back to it)."""
    from pqlib.models import AvgPool2

    g = torch.Generator().manual_seed(side)
    x = torch.randn(6, 4, side, side, generator=g).relu().to(dtype).requires_grad_()
    ref = x.detach().clone().requires_grad_()
    y, y_ref = AvgPool2()(x), torch.nn.functional.avg_pool2d(ref, 2)
    assert y.dtype == dtype and torch.equal(y, y_ref)
    grad = torch.randn(y.shape, generator=g).to(dtype)
    y.backward(grad)
    y_ref.backward(grad)
    assert torch.equal(x.grad, ref.grad)


def test_convnet_forward_is_unchanged_by_the_matrix_pooling():
    """A ConvNet with AvgPool2 computes what the same weights with nn.AvgPool2d compute, in
    float32 and under bfloat16 autocast."""
    from pqlib.models import AvgPool2

    torch.manual_seed(0)
    net = build("convnet_bn", 1, 10, 28).eval()
    plain = build("convnet_bn", 1, 10, 28).eval()
    plain.load_state_dict(net.state_dict())
    plain.body = torch.nn.Sequential(*[torch.nn.AvgPool2d(2) if isinstance(m, AvgPool2) else m
                                       for m in plain.body])
    assert sum(isinstance(m, AvgPool2) for m in net.body) == 3
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(net(x), plain(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(net(x), plain(x))
