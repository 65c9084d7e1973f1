"""The provenance probe: does a reverse image search by tile hashes still find an attacked image's original?"""

from __future__ import annotations

import numpy as np

from dlforge.adversarial.attacks.base import QUERIES
from dlforge.adversarial.probes.base import PROBES, Probe
from dlforge.adversarial.provenance import TileIndex, hash_distance, random_patch
from dlforge.errors import InputError
from dlforge.reporting import Column


@PROBES.register("provenance")
class Provenance(Probe):
    """Reverse image search for provenance (:mod:`dlforge.adversarial.provenance`): the gallery is the training set
    plus the audited originals (what a defender's search engine holds); each adversarial example of the audit's
    L-inf attacks listed before it in ``--attacks`` (crafted on the source, or on the first engine), and each audited image under a patch of
    ``patch`` of its area, is looked up by its tile hashes. Per attack and eps (or patch area): how often the
    original is among the top matches, and the share of tiles whose hash the attack changed.

    Args:
        tile: tile side in pixels (default 4: 49 tiles of a 28x28 image, 64 of a 32x32).
        gallery: training images in the gallery besides the originals (at most; default 60000, more than MNIST's
            training split of 54,000 after dlforge's validation split).
        patch: patch areas to test, as shares of the image, '/'-separated (default 0.1/0.25/0.5).
        seed: where the patches go.
    """

    name = "provenance"
    requires = frozenset({QUERIES})  # nothing beyond what every engine offers: it reads the audit's examples
    columns = (Column("attack"), Column("eps", fmt="g", align=">"), Column("patch_area", "patch area",
                                                                           lambda v: "-" if v is None else f"{v:g}", ">"),
               Column("recovered", "original found", ".3f", ">"),
               Column("tiles_changed", "tiles changed", ".3f", ">"), Column("queries", "images", "d", ">"))

    def __init__(self, *, tile: int = 4, gallery: int = 60000, patch: str = "0.1/0.25/0.5", seed: int = 0):
        try:
            self.areas = [float(a) for a in str(patch).split("/") if a.strip()]
        except ValueError:
            raise InputError(f"provenance:patch= takes areas like 0.1/0.25, got {patch!r}") from None
        if not all(0 < a < 1 for a in self.areas):
            raise InputError(f"provenance:patch= areas must lie in (0, 1), got {patch!r}")
        if tile % 2:
            raise InputError(f"provenance:tile= must be even (2x2 blocks per tile), got {tile}")
        self.tile, self.gallery, self.seed = tile, gallery, seed

    def prepare(self, run) -> None:
        h, w = run.x.shape[2:]
        if self.tile > min(h, w):
            raise InputError(f"provenance:tile={self.tile} is larger than the {h}x{w} images")

    def probe(self, run, show) -> dict:
        show("indexing the gallery")
        train = run.dataset.x_train[:self.gallery].astype(np.float32)
        lo, hi = run.value_range
        scale = (lambda z: (z - lo) / (hi - lo))  # noqa: E731  tile hashes work on [0, 1]
        index = TileIndex(scale(np.concatenate([train, run.x])), self.tile)
        originals = np.arange(len(run.x)) + len(train)
        rows = [{"route": "search", "target": "gallery", "attack": "clean", "eps": 0.0, "patch_area": None,
                 "recovered": float(index.recovers(scale(run.x), originals).mean()), "tiles_changed": 0.0,
                 "queries": len(run.x)}]
        first = run.engines[0].label
        norms = {a.name: a.norm for a in run.attacks if not isinstance(a, Probe)}
        seen = set()
        for key, x_adv in run.adv.items():
            if norms.get(key.attack) != "linf" or key.eps == 0 or key.engine not in (None, first) or (key.attack, key.eps) in seen:
                continue
            seen.add((key.attack, key.eps))
            show(f"{key.attack} eps {key.eps:g}")
            rows.append({"route": "search", "target": "gallery", "attack": key.attack, "eps": float(key.eps),
                         "patch_area": None, "recovered": float(index.recovers(scale(x_adv), originals).mean()),
                         "tiles_changed": float(hash_distance(scale(run.x), scale(x_adv), self.tile).mean()),
                         "queries": len(x_adv)})
        for area in self.areas:
            patched = random_patch(scale(run.x), area, self.seed)
            rows.append({"route": "search", "target": "gallery", "attack": "patch", "eps": None, "patch_area": area,
                         "recovered": float(index.recovers(patched, originals).mean()),
                         "tiles_changed": float(hash_distance(scale(run.x), patched, self.tile).mean()),
                         "queries": len(patched)})
        return {"rows": rows, "gallery": [],
                "notes": [f"provenance: gallery of {len(train)} training images and the {len(run.x)} audited "
                          f"originals; {self.tile}x{self.tile} tiles, IDF-weighted votes; a patch's content does not "
                          "change which tiles it covers, so random patches stand for the adversarial patch here"]}
