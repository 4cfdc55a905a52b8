import pytest
import torch

from dreamer.networks import MLP, BlockGRU, BlockLinear, Decoder, Encoder, ImageDecoder, ImageEncoder
from dreamer.world_model import WorldModel

from .conftest import make_batch, make_spec


def test_mlp_shapes_and_zero_init_output():
    mlp = MLP(10, 16, 2, out=255, out_scale=0.0)
    y = mlp(torch.randn(4, 7, 10))
    assert y.shape == (4, 7, 255)
    assert torch.count_nonzero(y) == 0  # zero-initialised output layer


def test_official_init_fan_in_and_output_scale_on_the_weights():
    """trunc_normal_in: std sqrt(1/fan_in) (fan_avg would give sqrt(1/160) = 0.079 here); the
    output scale multiplies the weights (0.01 → std 0.000625), not their variance (→ 0.00625)."""
    torch.manual_seed(0)
    hidden = MLP(256, 64, 1)[0][0]
    assert hidden.weight.std().item() == pytest.approx(256 ** -0.5, rel=0.03)
    assert hidden.bias is not None  # Linear → RMSNorm keeps its bias (RMSNorm does not centre)
    actor_out = MLP(256, 64, 1, out=4096, out_scale=0.01)[-1]
    assert actor_out.weight.std().item() == pytest.approx(0.01 * 64 ** -0.5, rel=0.03)
    block = BlockLinear(8, 32, 32)  # official fans of a (G, in/G, out/G) kernel: fan_in = in
    assert block.weight.std().item() == pytest.approx(256 ** -0.5, rel=0.05)


def test_block_linear_is_block_diagonal():
    layer = BlockLinear(4, 3, 5, bias=False)
    x = torch.randn(2, 4, 3)
    x2 = x.clone()
    x2[:, 1] += 1.0  # change group 1 only
    y, y2 = layer(x), layer(x2)
    changed = (y - y2).abs().sum((0, 2)) > 0
    assert changed.tolist() == [False, True, False, False]


def test_block_gru_shapes_and_gate_bias():
    gru = BlockGRU(deter=16, stoch_flat=8, action_dim=2, hidden=8, blocks=4)
    h = gru(torch.zeros(3, 16), torch.zeros(3, 8), torch.zeros(3, 2))
    assert h.shape == (3, 16)
    assert torch.isfinite(h).all() and h.abs().max() < 1


def test_block_gru_norms_the_whole_state_and_bounds_actions():
    """Official core: RMSNorm over all D features (not per block), actions / max(1, |a|)."""
    torch.manual_seed(0)
    gru = BlockGRU(deter=16, stoch_flat=8, action_dim=2, hidden=8, blocks=4)
    assert tuple(gru.hidden_norm.normalized_shape) == (16,)
    deter, stoch = torch.randn(3, 16), torch.randn(3, 8)
    action = torch.tensor([[3.0, -0.5], [0.2, 0.1], [-7.0, 2.0]])
    bounded = action / action.abs().clamp(min=1.0)
    assert torch.allclose(gru(deter, stoch, action), gru(deter, stoch, bounded), atol=1e-6)
    assert not torch.allclose(gru(deter, stoch, action), gru(deter, stoch, action * 0.5))


@pytest.mark.parametrize("size", [16, 64])
def test_image_encoder_decoder_shapes(size):
    enc = ImageEncoder((size, size, 3), depth=4)
    images = torch.randint(0, 256, (5, size, size, 3), dtype=torch.uint8)
    assert enc(images).shape == (5, enc.out_features)
    dec = ImageDecoder(20, (size, size, 3), depth=4)
    assert dec(torch.randn(5, 20)).shape == (5, size, size, 3)


def test_image_size_must_divide_by_16():
    with pytest.raises(ValueError, match="divisible by 16"):
        ImageEncoder((40, 40, 3), depth=4)


def test_encoder_decoder_dict_observation(tiny_config):
    spec = make_spec(vector=5, image=(16, 16, 3))
    m = tiny_config.model
    enc = Encoder(spec.obs_shapes, spec.image_keys, spec.vector_keys, m.units, m.layers, m.depth)
    batch = make_batch(spec, B=2, T=3)
    embed = enc(batch.obs)
    assert embed.shape == (2, 3, enc.out_features)
    dec = Decoder(m.feature_dim, spec.obs_shapes, spec.image_keys, spec.vector_keys, m.units,
                  m.layers, m.depth)
    feat = torch.randn(2, 3, m.feature_dim)
    assert dec.loss(feat, batch.obs).shape == (2, 3)
    predicted = dec.predict(feat)
    assert predicted["image"].shape == (2, 3, 16, 16, 3) and predicted["vector"].shape == (2, 3, 5)
    assert predicted["image"].min() >= 0 and predicted["image"].max() <= 255


def test_world_model_heads_shapes_on_debug_size(tiny_config):
    spec = make_spec(vector=3, image=(16, 16, 1), action_dim=2)
    wm = WorldModel(spec, tiny_config.model, tiny_config.world_model)
    batch = make_batch(spec, B=2, T=5)
    total, losses, states = wm.loss(batch)
    m = tiny_config.model
    assert total.shape == ()
    assert states.deter.shape == (2, 5, m.deter)
    assert states.stoch.shape == (2, 5, m.stoch, m.classes)
    feat = states.features()
    assert feat.shape == (2, 5, m.feature_dim)
    assert wm.reward(feat).shape == (2, 5)
    assert wm.reward(feat).abs().max() < 1e-5  # zero-initialised reward output
    assert wm.continue_prob(feat).shape == (2, 5)
    assert all(v.shape == (2, 5) for v in losses.values())
