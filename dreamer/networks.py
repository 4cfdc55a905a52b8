"""Building blocks: normalised MLPs, the block GRU, and the observation encoder and decoder.

Every hidden layer is Linear (with bias) → RMSNorm → SiLU, as in the official implementation.
Weights start truncated-normal with variance 1/fan_in, multiplied by an output scale: 0 for reward
and critic (so early predictions are exactly zero and cannot blow up returns), 0.01 for the actor
(near-uniform initial policy), 1 elsewhere.

Precision policy: the matmul layers here (:class:`Linear`, :class:`BlockLinear`, :class:`Conv2d`)
always return float32. Under ``torch.autocast(dtype=torch.bfloat16)``
(``Agent.autocast``) their matmuls run in bfloat16 with float32 accumulation and the result is cast
back, so norms, activations, the GRU state, distributions and losses stay float32 while weights and
optimiser state are float32 masters. Without autocast the casts are no-ops.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from .config import ModelConfig
    from .envs import EnvSpec

from .compiled import compiled
from .distributions import symexp, symlog

NORM_EPS = 1e-4


def as_matmul_input(x: Tensor) -> Tensor:
    """``x`` in the dtype autocast gives matmul inputs (itself when autocast is off).

    For activations that are stored and then only multiplied (the imagined features): casting
    once when storing halves their memory and saves every head its own cast."""
    if torch.is_autocast_enabled(x.device.type):
        return x.to(torch.get_autocast_dtype(x.device.type))
    return x


TRUNC_STD = 0.87962566103423978  # std of a standard normal truncated to [−2, 2]


def init_linear_(weight: Tensor, scale: float = 1.0, fan_in: int | None = None) -> None:
    """The official ``trunc_normal_in`` init times ``scale`` (its ``outscale``): a normal truncated
    at ±2 std with variance 1/fan_in, then every weight multiplied by ``scale``.

    ``fan_in`` defaults to what the official code computes from the kernel's shape: ``in`` for a
    Linear ``(out, in)``, ``G · in/G`` for a BlockLinear ``(G, in/G, out/G)``, ``in · kh · kw`` for
    a Conv2d ``(out, in, kh, kw)``. Pass it for other layouts.
    """
    if fan_in is None:
        if weight.ndim == 2:
            fan_in = weight.shape[1]
        elif weight.ndim == 3:
            fan_in = weight.shape[0] * weight.shape[1]
        else:
            fan_in = weight.shape[1] * weight[0, 0].numel()
    std = math.sqrt(1.0 / fan_in) / TRUNC_STD
    with torch.no_grad():
        nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)
        weight.mul_(scale)


class Linear(nn.Linear):
    """nn.Linear with the official init, an output scale and a float32 output (precision policy).

    Float32 on CPU (no autocast), two shapes MKL multiplies slowly are reshaped (study
    ``head_shapes``): an output wider than 16 but not a multiple of 16 (the two-hot heads' 255
    bins) is computed with zero weight rows up to the next multiple and sliced back, and rows that
    fill two or more whole blocks of ``ROW_BLOCK`` (a multiple of it: the heads on all 16,384
    imagined states) are multiplied block by block in one batched matmul. The values are
    nn.Linear's up to rounding (float32 updates differ in the last bits); bfloat16 gains nothing
    from either, so autocast skips both.
    """

    ALIGN, ROW_BLOCK = 16, 1024

    def __init__(self, in_features: int, out_features: int, bias: bool = True, scale: float = 1.0):
        super().__init__(in_features, out_features, bias=bias)
        init_linear_(self.weight, scale)
        if bias:
            nn.init.zeros_(self.bias)
        self.pad_out = -out_features % self.ALIGN if out_features > self.ALIGN else 0
        self.reshape_float32 = True  # False: plain F.linear (benchmarks/throughput.py)

    def forward(self, x: Tensor) -> Tensor:
        if not self.reshape_float32 or x.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
            return super().forward(x).float()
        weight, bias = self.weight, self.bias
        if self.pad_out:
            weight = F.pad(weight, (0, 0, 0, self.pad_out))  # (out + pad, in)
            bias = None if bias is None else F.pad(bias, (0, self.pad_out))
        rows = x.numel() // self.in_features
        if rows > self.ROW_BLOCK and rows % self.ROW_BLOCK == 0:
            blocks = x.reshape(-1, self.ROW_BLOCK, self.in_features)  # (rows / 1024, 1024, in)
            y = torch.bmm(blocks, weight.t().expand(len(blocks), -1, -1))
            y = y.reshape(*x.shape[:-1], -1)  # (..., out + pad)
            if bias is not None:
                y = y + bias
        else:
            y = F.linear(x, weight, bias)
        return y[..., : self.out_features] if self.pad_out else y


class Conv2d(nn.Conv2d):
    """nn.Conv2d with a float32 output (precision policy)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).float()


class NormLayer(nn.Sequential):
    """Linear → RMSNorm → SiLU. The bias is not redundant: RMSNorm scales but does not centre."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(
            Linear(in_features, out_features),
            nn.RMSNorm(out_features, eps=NORM_EPS),
            nn.SiLU(),
        )


class MLP(nn.Sequential):
    """``layers`` hidden NormLayers of width ``units``; an optional linear output of ``out``."""

    def __init__(
        self,
        in_features: int,
        units: int,
        layers: int,
        out: int | None = None,
        out_scale: float = 1.0,
    ):
        modules = []
        for i in range(layers):
            modules.append(NormLayer(in_features if i == 0 else units, units))
        if out is not None:
            modules.append(Linear(units if layers else in_features, out, scale=out_scale))
        super().__init__(*modules)
        self.out_features = out if out is not None else (units if layers else in_features)


class BlockLinear(nn.Module):
    """Block-diagonal linear map: ``G`` independent ``in/G → out/G`` maps on grouped features.

    Input ``(..., G, in/G)`` → output ``(..., G, out/G)``. With G = 8 this costs 1/8 of a dense
    layer,
    which is what makes the official GRU cheap in imagination.
    """

    def __init__(self, groups: int, in_per_group: int, out_per_group: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(groups, in_per_group, out_per_group))
        init_linear_(self.weight)
        self.bias = nn.Parameter(torch.zeros(groups, out_per_group)) if bias else None

    def forward(self, x: Tensor) -> Tensor:  # (N, G, I) → (N, G, O)
        y = torch.bmm(x.transpose(0, 1), self.weight).transpose(0, 1).float()  # (N, G, O)
        return y + self.bias if self.bias is not None else y


class BlockGRU(nn.Module):
    """The official DreamerV3 recurrent core: a GRU whose state is split into ``blocks`` groups.

    The previous latent, action and recurrent state are each embedded (NormLayer of ``hidden``), the
    embedding is broadcast to every group and concatenated to that group's slice of the state, then
    one block-linear layer, RMSNorm over the whole state and SiLU, then a block-linear gate layer
    update each group. The update gate is biased by −1 so the state is mostly kept early in
    training.
    Actions are divided by max(1, |a|) (no gradient) as in the official core, since imagined
    continuous actions are unclipped samples.

    The concatenation ``[state_g, embedding] @ W_g`` is computed as ``state_g @ W_state_g +
    embedding @ W_input[:, g]``: the same function, but the embedding's part is one dense matmul for
    all groups instead of ``blocks`` copies of the embedding (saves a (N, G, 3·hidden) copy per
    step).
    """

    def __init__(self, deter: int, stoch_flat: int, action_dim: int, hidden: int, blocks: int):
        super().__init__()
        self.deter, self.blocks = deter, blocks
        per_group = deter // blocks
        self.embed_stoch = NormLayer(stoch_flat, hidden)
        self.embed_action = NormLayer(action_dim, hidden)
        self.embed_deter = NormLayer(deter, hidden)
        self.state_layer = BlockLinear(blocks, per_group, per_group, bias=False)
        self.input_layer = Linear(3 * hidden, deter)  # (3·hidden) → (G·D/G), the layer's bias
        # init of the official block layer, kernel (G, per_group + 3·hidden, per_group)
        for weight in (self.state_layer.weight, self.input_layer.weight):
            init_linear_(weight, fan_in=blocks * (per_group + 3 * hidden))
        self.hidden_norm = nn.RMSNorm(deter, eps=NORM_EPS)  # over the whole state, as official
        self.gates = BlockLinear(blocks, per_group, 3 * per_group)

    def forward(self, deter: Tensor, stoch_flat: Tensor, action: Tensor) -> Tensor:
        """``deter (N, D)``, ``stoch_flat (N, S·C)``, ``action (N, A)`` → next ``deter (N, D)``."""
        N, G = deter.shape[0], self.blocks
        action = action / action.abs().clamp(min=1.0).detach()
        inputs = torch.cat(
            [self.embed_stoch(stoch_flat), self.embed_action(action), self.embed_deter(deter)], -1
        )  # (N, 3·hidden)
        grouped = deter.view(N, G, -1)  # (N, G, D/G)
        x = self.state_layer(grouped) + self.input_layer(inputs).view(N, G, -1)  # (N, G, D/G)
        x = F.silu(self.hidden_norm(x.reshape(N, self.deter))).view(N, G, -1)
        reset, candidate, update = self.gates(x).chunk(3, -1)  # each (N, G, D/G)
        reset = torch.sigmoid(reset)
        candidate = torch.tanh(reset * candidate)
        update = torch.sigmoid(update - 1.0)
        new = update * candidate + (1 - update) * grouped
        return new.reshape(N, self.deter)


class ChannelNorm(nn.Module):
    """RMSNorm over the channel axis of ``(N, C, H, W)`` images."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.RMSNorm(channels, eps=NORM_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


CNN_MULTIPLIERS = (2, 3, 4, 4)
CNN_KERNEL = 5
DECODER_SPACE_GROUPS = 8  # official dec.bspace: the deter → first feature map map is block-diagonal


def _conv(in_channels: int, out_channels: int) -> Conv2d:
    """A 'same'-padded k5 conv with the official init (fan_in = in · 25) and a zero bias."""
    conv = Conv2d(in_channels, out_channels, CNN_KERNEL, padding=CNN_KERNEL // 2)
    init_linear_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ImageEncoder(nn.Module):
    """uint8 image ``(N, H, W, C)`` → x/255 − 0.5 → 4 × (k5 conv, 2×2 max-pool, RMSNorm, SiLU).

    As the official encoder (``kernel: 5, strided: False``): channels depth × [2, 3, 4, 4], each
    stage halves the resolution with a max-pool, so 64² ends at 4².
    """

    def __init__(self, image_shape: tuple[int, int, int], depth: int):
        super().__init__()
        H, W, C = image_shape
        if H % 16 or W % 16:
            raise ValueError(f"image size {H}×{W} must be divisible by 16 for the CNN encoder")
        layers, channels = [], C
        for mult in CNN_MULTIPLIERS:
            layers += [
                _conv(channels, depth * mult),
                nn.MaxPool2d(2),
                ChannelNorm(depth * mult),
                nn.SiLU(),
            ]
            channels = depth * mult
        self.net = nn.Sequential(*layers)
        self.out_features = channels * (H // 16) * (W // 16)

    def forward(self, image: Tensor) -> Tensor:
        x = image.permute(0, 3, 1, 2).float() / 255.0 - 0.5  # (N, C, H, W)
        return self.net(x).flatten(1)


class ImageDecoder(nn.Module):
    """feat ``(N, D + S·C)`` → feature map (depth·4, H/16, W/16) → 4 stages of 2× nearest upsample
    and k5 conv → sigmoid → the prediction of x/255 ``(N, H, W, C)``.

    The first feature map is built as the official decoder does (``bspace: 8``): a block-diagonal
    map of the deter vector (group g fills channel slice g) plus a two-layer map of the stochastic
    sample, summed, then RMSNorm and SiLU. The loss is MSE summed over pixels (no Normal(·, 1)
    constant that would dominate the loss plot).
    """

    def __init__(
        self, deter: int, stoch_flat: int, image_shape: tuple[int, int, int], depth: int, units: int
    ):
        super().__init__()
        H, W, C = image_shape
        self.start_shape = (depth * CNN_MULTIPLIERS[-1], H // 16, W // 16)  # (C0, h, w)
        channels, h, w = self.start_shape
        # Fall back to one group (a dense map) where deter or the channels do not split in 8.
        groups = DECODER_SPACE_GROUPS
        if deter % groups or channels % groups:
            groups = 1
        self.groups = groups
        self.deter = deter
        self.from_deter = BlockLinear(groups, deter // groups, h * w * channels // groups)
        self.from_stoch = nn.Sequential(
            NormLayer(stoch_flat, 2 * units), Linear(2 * units, math.prod(self.start_shape))
        )
        self.start_norm = ChannelNorm(channels)
        layers = []
        for mult in reversed(CNN_MULTIPLIERS[:-1]):
            layers += [
                nn.Upsample(scale_factor=2),
                _conv(channels, depth * mult),
                ChannelNorm(depth * mult),
                nn.SiLU(),
            ]
            channels = depth * mult
        layers += [nn.Upsample(scale_factor=2), _conv(channels, C), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, feat: Tensor) -> Tensor:
        N, (C0, h, w), G = feat.shape[0], self.start_shape, self.groups
        deter, stoch = feat[:, : self.deter], feat[:, self.deter :]
        x = self.from_deter(deter.reshape(N, G, -1))  # (N, G, h·w·C0/G)
        x = x.view(N, G, h, w, C0 // G).permute(0, 1, 4, 2, 3).reshape(N, C0, h, w)
        x = x + self.from_stoch(stoch).view(N, C0, h, w)
        x = F.silu(self.start_norm(x))  # (N, C0, h, w)
        return self.net(x).permute(0, 2, 3, 1)  # (N, H, W, C) in (0, 1)


class Encoder(nn.Module):
    """All observation keys → one embedding ``(..., E)``: vectors by symlog + MLP, images by CNN."""

    def __init__(self, spec: EnvSpec, model: ModelConfig):
        """``spec``: the observation keys and shapes; ``model``: units, layers and depth."""
        super().__init__()
        obs_shapes = spec.obs_shapes
        self.image_keys, self.vector_keys = tuple(spec.image_keys), tuple(spec.vector_keys)
        self.images = nn.ModuleDict(
            {k: ImageEncoder(obs_shapes[k], model.depth) for k in self.image_keys}
        )
        vector_dim = sum(obs_shapes[k][0] for k in self.vector_keys)
        self.vector = (
            MLP(vector_dim, model.units, max(model.layers, 1)) if self.vector_keys else None
        )
        self.out_features = sum(m.out_features for m in self.images.values())
        self.out_features += self.vector.out_features if self.vector is not None else 0

    @compiled
    def forward(self, obs: dict[str, Tensor]) -> Tensor:
        parts = []
        if self.vector is not None:
            vectors = torch.cat([obs[k].float() for k in self.vector_keys], -1)
            parts.append(self.vector(symlog(vectors)))
        for key, net in self.images.items():
            image = obs[key]
            flat = image.reshape(-1, *image.shape[-3:])
            parts.append(net(flat).reshape(*image.shape[:-3], -1))
        return torch.cat(parts, -1)


class Decoder(nn.Module):
    """feat ``(..., D + S·C)`` → reconstruction loss per step. Vectors: symlog-MSE; images: MSE of
    a sigmoid output against x/255, summed over pixels (official)."""

    def __init__(self, spec: EnvSpec, model: ModelConfig):
        """``spec``: the observation keys and shapes; ``model``: the widths of the features
        (deter, stoch × classes) and of the networks (units, layers, depth)."""
        super().__init__()
        obs_shapes, deter, stoch_flat = spec.obs_shapes, model.deter, model.stoch * model.classes
        units, layers, depth = model.units, model.layers, model.depth
        self.image_keys, self.vector_keys = tuple(spec.image_keys), tuple(spec.vector_keys)
        self.vector_sizes = [obs_shapes[k][0] for k in self.vector_keys]
        self.vector = (
            MLP(deter + stoch_flat, units, max(layers, 1), out=sum(self.vector_sizes))
            if self.vector_keys
            else None
        )
        self.images = nn.ModuleDict(
            {
                k: ImageDecoder(deter, stoch_flat, obs_shapes[k], depth, units)
                for k in self.image_keys
            }
        )

    def predict(self, feat: Tensor) -> dict[str, Tensor]:
        """Reconstructions in observation space: vectors float, images float in [0, 255]."""
        out = {}
        if self.vector is not None:
            pieces = self.vector(feat).split(self.vector_sizes, -1)
            out.update({k: symexp(p) for k, p in zip(self.vector_keys, pieces)})
        for key, net in self.images.items():
            image = net(feat.reshape(-1, feat.shape[-1]))
            out[key] = (image * 255).reshape(*feat.shape[:-1], *image.shape[1:])
        return out

    def loss(self, feat: Tensor, obs: dict[str, Tensor]) -> Tensor:
        """Summed reconstruction loss over keys and features: ``feat (B, T, F)`` → ``(B, T)``."""
        total = torch.zeros(feat.shape[:-1], device=feat.device)
        if self.vector is not None:
            target = symlog(torch.cat([obs[k].float() for k in self.vector_keys], -1))
            total = total + (self.vector(feat) - target).pow(2).sum(-1)
        for key, net in self.images.items():
            prediction = net(feat.reshape(-1, feat.shape[-1]))  # (B·T, H, W, C)
            target = obs[key].reshape(prediction.shape).float() / 255.0
            total = total + (prediction - target).pow(2).sum((-3, -2, -1)).view(feat.shape[:-1])
        return total
