import math

import pytest
import torch

from dreamer.networks import (
    MLP,
    BlockGRU,
    BlockLinear,
    Decoder,
    Encoder,
    ImageDecoder,
    ImageEncoder,
    Linear,
)
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
    assert hidden.weight.std().item() == pytest.approx(256**-0.5, rel=0.03)
    assert hidden.bias is not None  # Linear → RMSNorm keeps its bias (RMSNorm does not centre)
    actor_out = MLP(256, 64, 1, out=4096, out_scale=0.01)[-1]
    assert actor_out.weight.std().item() == pytest.approx(0.01 * 64**-0.5, rel=0.03)
    block = BlockLinear(8, 32, 32)  # official fans of a (G, in/G, out/G) kernel: fan_in = in
    assert block.weight.std().item() == pytest.approx(256**-0.5, rel=0.05)


def reshape_calls(monkeypatch) -> dict[str, int]:
    """Counts of the batched matmuls (row blocks) and pads (16-aligned width) Linear makes."""
    calls = {"bmm": 0, "pad": 0}
    for owner, name in ((torch, "bmm"), (torch.nn.functional, "pad")):
        original = getattr(owner, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.parametrize(
    "lead, out, blocks, padded",
    [
        ((256, 16), 255, True, True),
        ((256, 16), 64, True, False),
        ((100, 15), 255, False, True),  # 1,500 rows: not a multiple of 1,024
        ((3,), 255, False, True),
        ((256, 16), 2, True, False),  # 16 outputs or fewer are never padded
    ],
    ids=["blocks+padded", "blocks", "padded", "few-rows", "narrow"],
)
def test_float32_linear_reshaped_for_mkl_gives_nn_linears_values_and_gradients(
    monkeypatch, lead, out, blocks, padded
):
    """The float32 CPU path (row blocks, a 16-aligned width) is taken where it should be and is
    nn.Linear up to rounding."""
    torch.manual_seed(0)
    layer = Linear(64, out)
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(*lead, 64)  # (N, H+1, F) as the heads on imagined states get it
    calls = reshape_calls(monkeypatch)
    y = layer(x)
    assert calls == {"bmm": int(blocks), "pad": 2 * int(padded)}  # weight and bias padded
    assert y.shape == (*x.shape[:-1], out) and y.dtype == torch.float32
    reference = torch.nn.functional.linear(x, layer.weight, layer.bias)
    torch.testing.assert_close(y, reference, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(y)
    dw, db = torch.autograd.grad(y, (layer.weight, layer.bias), grad)
    dw_ref, db_ref = torch.autograd.grad(reference, (layer.weight, layer.bias), grad)
    torch.testing.assert_close(dw, dw_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(db, db_ref, rtol=1e-4, atol=1e-4)
    layer.reshape_float32 = False  # the plain layer is exactly F.linear
    assert torch.equal(layer(x), reference)


def test_bfloat16_linear_under_autocast_is_the_plain_layer(monkeypatch):
    layer = Linear(64, 255)
    x = torch.randn(4, 1024, 64)
    calls = reshape_calls(monkeypatch)
    with torch.autocast("cpu", torch.bfloat16):
        y = layer(x)
    assert calls == {"bmm": 0, "pad": 0}
    with torch.autocast("cpu", torch.bfloat16):
        plain = torch.nn.functional.linear(x, layer.weight, layer.bias).float()
    assert y.dtype == torch.float32 and torch.equal(y, plain)


def test_block_linear_is_block_diagonal():
    layer = BlockLinear(4, 3, 5, bias=False)
    x = torch.randn(2, 4, 3)
    x2 = x.clone()
    x2[:, 1] += 1.0  # change group 1 only
    y, y2 = layer(x), layer(x2)
    changed = (y - y2).abs().sum((0, 2)) > 0
    assert changed.tolist() == [False, True, False, False]


def test_block_gru_shapes_and_update_gate_bias():
    """The update gate is sigmoid(pre-activation − 1) (official core): with the gate layer zeroed so
    every pre-activation is its bias, a zero update bias moves the state the fraction sigmoid(−1)
    ≈ 0.269 of the way to the candidate, and an update bias of +1 exactly half way."""
    torch.manual_seed(0)
    gru = BlockGRU(deter=16, stoch_flat=8, action_dim=2, hidden=8, blocks=4)
    deter, stoch, action = torch.randn(3, 16), torch.randn(3, 8), torch.randn(3, 2)
    assert gru(deter, stoch, action).shape == (3, 16)
    G, P = 4, 16 // 4  # blocks, features per block
    with torch.no_grad():
        gru.gates.weight.zero_()
        reset_bias, candidate_bias, update_bias = gru.gates.bias.view(G, 3, P).unbind(1)
        reset_bias.fill_(0.0)  # reset = 0.5
        candidate_bias.fill_(2.0)  # candidate = tanh(0.5 · 2)
        update_bias.fill_(0.0)
    candidate = math.tanh(0.5 * 2.0)
    expected = deter + (candidate - deter) / (1 + math.e)  # update = sigmoid(0 − 1) = 1 / (1 + e)
    assert torch.allclose(gru(deter, stoch, action), expected, atol=1e-5)
    with torch.no_grad():
        update_bias.fill_(1.0)  # update = sigmoid(1 − 1) = 0.5
    assert torch.allclose(gru(deter, stoch, action), (deter + candidate) / 2, atol=1e-5)


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
    """Official layout: 4 stages that each halve the resolution (k5 conv + 2x2 max-pool on the
    way in, nearest upsample + k5 conv on the way out) and a sigmoid image in (0, 1)."""
    enc = ImageEncoder((size, size, 3), depth=4)
    images = torch.randint(0, 256, (5, size, size, 3), dtype=torch.uint8)
    assert enc(images).shape == (5, enc.out_features) == (5, 16 * (size // 16) ** 2)
    convs = [m for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(5, 5)] * 4 and all(c.stride == (1, 1) for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in enc.modules()) == 4
    dec = ImageDecoder(16, 8, (size, size, 3), depth=4, units=8)
    image = dec(torch.randn(5, 24) * 10)
    assert image.shape == (5, size, size, 3) and 0 < image.min() and image.max() < 1
    assert sum(isinstance(m, torch.nn.Upsample) for m in dec.modules()) == 4


def test_image_decoder_maps_each_deter_block_to_its_own_channels():
    """Official ``bspace: 8``: deter group g fills only channel slice g of the first feature map;
    the stochastic part reaches every channel."""
    torch.manual_seed(0)
    dec = ImageDecoder(deter=16, stoch_flat=8, image_shape=(16, 16, 3), depth=4, units=8)
    assert dec.groups == 8
    first_map = []
    dec.start_norm.register_forward_hook(lambda module, args, out: first_map.append(args[0]))
    feat = torch.randn(1, 24)
    changed_deter, changed_stoch = feat.clone(), feat.clone()
    changed_deter[0, 2:4] += 1.0  # deter group 1 (two features per group)
    changed_stoch[0, 16:] += 1.0
    for x in (feat, changed_deter, changed_stoch):
        dec(x)
    base, by_deter, by_stoch = first_map  # (1, 16, 1, 1): two channels per group
    moved = (by_deter - base).abs().flatten() > 1e-6
    assert moved.nonzero().flatten().tolist() == [2, 3]
    assert ((by_stoch - base).abs().flatten() > 1e-6).all()


def test_image_size_must_divide_by_16():
    with pytest.raises(ValueError, match="divisible by 16"):
        ImageEncoder((40, 40, 3), depth=4)


def test_encoder_decoder_dict_observation(tiny_config):
    spec = make_spec(vector=5, image=(16, 16, 3))
    m = tiny_config.model
    enc = Encoder(spec, m)
    batch = make_batch(spec, B=2, T=3)
    embed = enc(batch.obs)
    assert embed.shape == (2, 3, enc.out_features)
    dec = Decoder(spec, m)
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
