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
