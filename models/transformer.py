"""``transformer``: a small vision transformer (Dosovitskiy et al. 2021).

The image is cut into square patches, each linearly embedded; a learned class token and position
embeddings are added, a pre-norm encoder of multi-head self-attention and MLP blocks follows, and
the class token's final state is classified. Attention is written with plain matmuls so it exports
to ONNX with a dynamic batch.
"""

from __future__ import annotations

import torch
from torch import nn

from dlforge_models._registry import TrainDefaults, register_model


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int, dropout: float):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, input_shape, num_classes, patch, dim, depth, heads, mlp, dropout):
        super().__init__()
        c, h, w = input_shape
        if h % patch or w % patch:
            raise ValueError(f"patch size {patch} does not divide {h}x{w} images")
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.config = {"input_shape": list(input_shape), "num_classes": num_classes, "patch": patch, "dim": dim,
                       "depth": depth, "heads": heads, "mlp": mlp, "dropout": dropout}
        self.embed = nn.Conv2d(c, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (h // patch) * (w // patch) + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos
        return self.head(self.norm(self.blocks(tokens))[:, 0])


@register_model(defaults=TrainDefaults(epochs=10, small_data_epochs=60, batch_size=128, lr=2e-3, weight_decay=0.05))
def transformer(*, input_shape, num_classes, patch=None, dim=64, depth=4, heads=4, mlp=128, dropout=0.1) -> nn.Module:
    """Small vision transformer: patch embedding, class token, self-attention encoder."""
    size = input_shape[-1]
    patch = patch or (7 if size % 7 == 0 else 4 if size % 4 == 0 and size >= 16 else 2)  # 28x28: 16 patches
    return VisionTransformer(input_shape, num_classes, patch, dim, depth, heads, mlp, dropout)
