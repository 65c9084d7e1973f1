"""Provenance lookup: the literal reverse image search. Given a query, find its near-duplicates in a gallery (the
training set, and the originals a defender has seen) by the hashes of its tiles.

Each image is cut into ``tile x tile`` tiles; a tile's hash is the position of the tile and the bits of its
``blocks x blocks`` block means against the tile's own mean (an average hash, robust to noise that shifts every
pixel alike), or of a constant tile its quantized level. A query votes for every gallery image sharing a tile hash,
each vote weighted by how rare that hash is in the gallery (inverse document frequency: a blank corner matches
every digit and says nothing). The top-voted image is the query's provenance. A patch covers some tiles and leaves
the rest to match; an eps-ball perturbation changes the tiles whose block means it pushes across their mean.
"""

from __future__ import annotations

import numpy as np

_MIX = np.uint64(0x9E3779B97F4A7C15)


def tile_hashes(x: np.ndarray, tile: int, blocks: int = 2, levels: int = 4, tolerance: float = 0.15) -> np.ndarray:
    """``(N, tiles)`` uint64 hashes (see the module docstring); images ``(N, C, H, W)`` in [0, 1], cropped to a
    multiple of ``tile``."""
    n, c, h, w = x.shape
    th, tw = h // tile, w // tile
    if th == 0 or tw == 0 or tile % blocks:
        raise ValueError(f"tile {tile} must fit the {h}x{w} image and be a multiple of blocks ({blocks})")
    t = x[:, :, :th * tile, :tw * tile].reshape(n, c, th, blocks, tile // blocks, tw, blocks, tile // blocks)
    means = t.mean(axis=(4, 7))  # (n, c, th, blocks, tw, blocks)
    means = means.transpose(0, 2, 4, 1, 3, 5).reshape(n, th * tw, c * blocks * blocks)
    tile_mean = means.mean(2, keepdims=True)
    bits = (means > tile_mean + tolerance / 2).astype(np.uint64)
    flat = means.max(2) - means.min(2) < tolerance  # a near-constant tile: its level instead of its (empty) pattern
    level = np.minimum((tile_mean[..., 0] * levels).astype(np.uint64), levels - 1)
    code = (bits << np.arange(bits.shape[2], dtype=np.uint64)).sum(2)
    code = np.where(flat, (np.uint64(1) << np.uint64(62)) + level, code)
    position = np.arange(th * tw, dtype=np.uint64)[None]
    with np.errstate(over="ignore"):
        return (code * _MIX + position) * _MIX


class TileIndex:
    """An inverted index of a gallery's tile hashes (see the module docstring)."""

    def __init__(self, gallery: np.ndarray, tile: int, blocks: int = 2):
        self.tile, self.blocks = tile, blocks
        hashes = tile_hashes(gallery, tile, blocks)
        self.count = len(gallery)
        flat = hashes.ravel()
        order = np.argsort(flat, kind="stable")
        self.keys, self.ids = flat[order], (order // hashes.shape[1]).astype(np.int64)
        unique, counts = np.unique(self.keys, return_counts=True)
        self._unique, self._idf = unique, np.log(self.count / counts)

    def votes(self, x: np.ndarray) -> np.ndarray:
        """``(N, gallery)`` IDF-weighted tile matches of each query."""
        hashes = tile_hashes(x, self.tile, self.blocks)
        out = np.zeros((len(x), self.count))
        for q, row in enumerate(hashes):
            lo, hi = np.searchsorted(self.keys, row, "left"), np.searchsorted(self.keys, row, "right")
            where = np.minimum(np.searchsorted(self._unique, row), len(self._unique) - 1)
            found = (hi > lo) & (self._unique[where] == row)
            if not found.any():
                continue
            ids = np.concatenate([self.ids[a:b] for a, b in zip(lo[found], hi[found])])
            weights = np.repeat(self._idf[where[found]], (hi - lo)[found])
            out[q] = np.bincount(ids, weights=weights, minlength=self.count)
        return out

    def recovers(self, x: np.ndarray, original: np.ndarray) -> np.ndarray:
        """Whether each query's ``original`` (a gallery index) is among its top-voted gallery images (exact ties
        included: a search returns every image that matches as well)."""
        votes = self.votes(x)
        return votes[np.arange(len(x)), original] >= votes.max(1) - 1e-9


def hash_distance(a: np.ndarray, b: np.ndarray, tile: int, blocks: int = 2) -> np.ndarray:
    """Share of tiles whose hash differs between ``a`` and ``b``, per image."""
    return (tile_hashes(a, tile, blocks) != tile_hashes(b, tile, blocks)).mean(1)


def random_patch(x: np.ndarray, area: float, seed: int = 0) -> np.ndarray:
    """``x`` with a square of ``area`` of the image replaced by uniform noise at a random place per image (what a
    patch does to a tile hash does not depend on its content: the tiles it covers change, the rest do not)."""
    rng = np.random.default_rng(seed)
    n, c, h, w = x.shape
    side = max(1, int(round(np.sqrt(area * h * w))))
    out = x.copy()
    for i in range(n):
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        out[i, :, top:top + side, left:left + side] = rng.uniform(0, 1, (c, side, side))
    return out
