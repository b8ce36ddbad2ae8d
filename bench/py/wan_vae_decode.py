# The Wan2.1 VAE decoder in plain PyTorch for the bench's side-by-side numbers (bench/cases/wan-vae.ts):
# the computation of diffusers' AutoencoderKLWan.decode (causal conv3d with a 2-frame feature cache,
# the first latent frame alone, then one latent frame at a time, clamp to [-1, 1]) with the same
# parameter names, so that diffusers checkpoints load into it. Needs only torch.
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

CACHE_T = 2


class CausalConv3d(nn.Conv3d):
    def __init__(self, cin, cout, k, stride=1, padding=(0, 0, 0)):
        super().__init__(cin, cout, k, stride=stride)
        self.pads = (padding[2], padding[2], padding[1], padding[1], 2 * padding[0], 0)

    def forward(self, x, cache=None):
        pads = list(self.pads)
        if cache is not None and pads[4] > 0:
            x = torch.cat([cache, x], 2)
            pads[4] -= cache.shape[2]
        return super().forward(F.pad(x, pads))


class RMSNorm(nn.Module):
    def __init__(self, dim, images=False):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x):
        return F.normalize(x, dim=1) * self.scale * self.gamma


class Cache:
    """feat_cache + feat_idx: one slot per cached conv, visited in order every chunk."""

    def __init__(self):
        self.slots, self.i = [], 0

    def peek(self):
        return self.slots[self.i] if self.i < len(self.slots) else None

    def store(self, v):
        if self.i < len(self.slots):
            self.slots[self.i] = v
        else:
            self.slots.append(v)
        self.i += 1


def next_cache(x, prev):
    tail = x[:, :, -CACHE_T:].clone()
    if tail.shape[2] < 2 and prev is not None:
        front = torch.zeros_like(tail) if isinstance(prev, str) else prev[:, :, -1:]
        tail = torch.cat([front, tail], 2)
    return tail


def cached_conv(conv, x, cache):
    prev = cache.peek()
    nxt = next_cache(x, prev)
    out = conv(x, prev)
    cache.store(nxt)
    return out


class ResidualBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1 = RMSNorm(cin)
        self.conv1 = CausalConv3d(cin, cout, 3, padding=(1, 1, 1))
        self.norm2 = RMSNorm(cout)
        self.conv2 = CausalConv3d(cout, cout, 3, padding=(1, 1, 1))
        self.conv_shortcut = CausalConv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, cache):
        h = self.conv_shortcut(x)
        x = cached_conv(self.conv1, F.silu(self.norm1(x)), cache)
        x = cached_conv(self.conv2, F.silu(self.norm2(x)), cache)
        return x + h


class AttentionBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        b, c, t, h, w = x.shape
        y = self.norm(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
        q, k, v = self.to_qkv(y).reshape(b * t, 1, c * 3, -1).permute(0, 1, 3, 2).contiguous().chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v).squeeze(1).permute(0, 2, 1).reshape(b * t, c, h, w)
        return self.proj(y).view(b, t, c, h, w).permute(0, 2, 1, 3, 4) + x


class Upsample(nn.Module):
    def __init__(self, dim, temporal):
        super().__init__()
        self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"), nn.Conv2d(dim, dim // 2, 3, padding=1))
        if temporal:
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        self.temporal = temporal

    def forward(self, x, cache):
        b, c, t, h, w = x.shape
        if self.temporal:
            prev = cache.peek()
            if prev is None:
                cache.store("Rep")
            else:
                nxt = next_cache(x, prev)
                x = self.time_conv(x) if isinstance(prev, str) else self.time_conv(x, prev)
                cache.store(nxt)
                x = torch.stack((x[:, :c], x[:, c:]), 3).reshape(b, c, t * 2, h, w)
        t = x.shape[2]
        x = self.resample(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
        return x.view(b, t, x.size(1), x.size(2), x.size(3)).permute(0, 2, 1, 3, 4)


class UpBlock(nn.Module):
    def __init__(self, cin, cout, num_res_blocks, upsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResidualBlock(cin if i == 0 else cout, cout) for i in range(num_res_blocks + 1)])
        self.upsamplers = nn.ModuleList([Upsample(cout, upsample == "3d")]) if upsample else None

    def forward(self, x, cache):
        for r in self.resnets:
            x = r(x, cache)
        return self.upsamplers[0](x, cache) if self.upsamplers is not None else x


class MidBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.resnets = nn.ModuleList([ResidualBlock(dim, dim), ResidualBlock(dim, dim)])
        self.attentions = nn.ModuleList([AttentionBlock(dim)])

    def forward(self, x, cache):
        return self.resnets[1](self.attentions[0](self.resnets[0](x, cache)), cache)


class Decoder(nn.Module):
    def __init__(self, dim, z_dim, dim_mult, num_res_blocks, temperal_downsample, out_channels=3):
        super().__init__()
        dims = [dim * u for u in [dim_mult[-1]] + dim_mult[::-1]]
        up_t = temperal_downsample[::-1]
        self.conv_in = CausalConv3d(z_dim, dims[0], 3, padding=(1, 1, 1))
        self.mid_block = MidBlock(dims[0])
        self.up_blocks = nn.ModuleList()
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            up = None if i == len(dim_mult) - 1 else ("3d" if up_t[i] else "2d")
            self.up_blocks.append(UpBlock(cin // 2 if i > 0 else cin, cout, num_res_blocks, up))
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], out_channels, 3, padding=(1, 1, 1))

    def forward(self, x, cache):
        x = cached_conv(self.conv_in, x, cache)
        x = self.mid_block(x, cache)
        for b in self.up_blocks:
            x = b(x, cache)
        return cached_conv(self.conv_out, F.silu(self.norm_out(x)), cache)


class WanVaeDecoder(nn.Module):
    """post_quant_conv + decoder of AutoencoderKLWan (parameter names as in diffusers)."""

    def __init__(self, base_dim=96, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2, temperal_downsample=(False, True, True)):
        super().__init__()
        self.post_quant_conv = CausalConv3d(z_dim, z_dim, 1)
        self.decoder = Decoder(base_dim, z_dim, list(dim_mult), num_res_blocks, list(temperal_downsample))

    @torch.no_grad()
    def decode(self, z):
        x = self.post_quant_conv(z)
        cache = Cache()
        out = []
        for i in range(z.shape[2]):
            cache.i = 0
            out.append(self.decoder(x[:, :, i : i + 1], cache))
        return torch.cat(out, 2).clamp(-1, 1)


def randomize(model, seed=0):
    """Random weights with unit-ish activations (fan-in scaled), as the bench uses."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0)
            elif p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            else:
                p.zero_()
    return model
