"""Nested labels: label layers each enclosed by the next, as tumour sub-regions are (necrosis inside an enhancing
rim inside oedema), and the region-based training nnU-Net offers for them.

The evidence is the face contacts between label values: for every pair of face neighbours holding different
values, the pair (low, high) is counted (``count_contacts``, per case, during the fingerprint's boundary pass;
the image border is no contact). Summed over the cases, a set U of labels is *enclosed* when at most
``nested_background_share`` of its outer faces (faces between U and any value outside U, the ignore label left
out) touch the background, and its *encloser* is the label holding at least ``nested_enclosure`` of those faces
(thresholds and their reasons in ``fingerprints/regimes.yaml``). A chain grows from an innermost label outwards,
adding the encloser while the set stays enclosed; the longest chain is kept, its labels removed, and the search
repeats, so a dataset can hold several chains (a tumour in each of two organs) beside labels that nest in
nothing.

The suggestion is nnU-Net's own (``documentation/region_based_training.md``): each region is a layer with
everything inside it, declared as a list of label values, outer regions first, and ``regions_class_order`` maps
the regions back to a label map (later regions overwrite earlier ones, so the innermost layer wins). Nothing is
written: the user's dataset.json is theirs to change.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

Contacts = Counter  # (low value, high value) -> face count


def count_contacts(a: np.ndarray, b: np.ndarray, into: Contacts) -> None:
    """Add the face pairs (a[i], b[i]) with a[i] != b[i] (both 1-D, one entry per pair of neighbours) to ``into``."""
    if a.size == 0:
        return
    low, high = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    k = int(high.max()) + 1
    codes = low * k + high
    if k * k <= 1 << 16:  # the usual handful of labels: a bincount, no sort
        counts = np.bincount(codes, minlength=k * k)
        found = np.flatnonzero(counts)
        counts = counts[found]
    else:
        found, counts = np.unique(codes, return_counts=True)
    for code, n in zip(found.tolist(), counts.tolist()):
        into[(code // k, code % k)] += n


def _outer_faces(inside: set[int], contacts: Contacts, ignore: int | None) -> Counter:
    """Faces between the labels ``inside`` and each value outside them."""
    out: Counter = Counter()
    for (a, b), n in contacts.items():
        if (a in inside) == (b in inside):
            continue
        other = b if a in inside else a
        if other != ignore:
            out[other] += n
    return out


def _chain_from(start: int, free: set[int], contacts: Contacts, ignore: int | None,
                background_share: float, enclosure: float) -> tuple[list[int], list[float]]:
    """Labels from ``start`` outwards, each enclosing the set before it, and each encloser's share of its faces."""
    chain, shares = [start], []
    while True:
        out = _outer_faces(set(chain), contacts, ignore)
        total = sum(out.values())
        if total == 0 or out.get(0, 0) > background_share * total:
            return chain, shares
        candidates = [(n, v) for v, n in out.items() if v in free and v not in chain]
        if not candidates:
            return chain, shares
        faces, encloser = max(candidates)
        if faces < enclosure * total:
            return chain, shares
        chain.append(encloser)
        shares.append(faces / total)


def nested_chains(contacts: Contacts, values: list[int], ignore: int | None, background_share: float,
                  enclosure: float) -> list[dict[str, Any]]:
    """Every chain of at least two labels, each enclosed by the next: ``layers`` from the outermost label
    inwards, and ``enclosed`` the share of each inner set's outer faces that its encloser holds (outer first)."""
    free = set(values)
    chains = []
    while True:
        found = [_chain_from(v, free, contacts, ignore, background_share, enclosure) for v in sorted(free)]
        found = [(chain, shares) for chain, shares in found if len(chain) >= 2]
        if not found:
            return chains
        chain, shares = max(found, key=lambda cs: (len(cs[0]), min(cs[1])))
        chains.append({"layers": chain[::-1], "enclosed": [round(s, 4) for s in shares[::-1]]})
        free -= set(chain)


def region_suggestion(chains: list[dict[str, Any]], labels: dict[str, Any]) -> dict[str, Any]:
    """nnU-Net's region-based ``labels`` and ``regions_class_order`` for a label-map dataset.json ``labels``
    (name -> value) with these chains: per chain, each layer with everything inside it, outer first; the other
    labels stay single-value regions; background and ignore are kept as they are."""
    name_of = {v: k for k, v in labels.items() if isinstance(v, int)}
    in_chain = {v for c in chains for v in c["layers"]}
    regions: dict[str, Any] = {"background": labels.get("background", 0)}
    order = []
    for c in chains:
        layers = c["layers"]
        for i, v in enumerate(layers):
            inner = layers[i:]
            regions[name_of[v] if len(inner) == 1 else f"{name_of[v]}_and_inner"] = sorted(inner)
            order.append(v)
    for name, v in labels.items():
        if name in ("background", "ignore") or not isinstance(v, int) or v == 0 or v in in_chain:
            continue
        regions[name] = v
        order.append(v)
    if "ignore" in labels:
        regions["ignore"] = labels["ignore"]
    return {"labels": regions, "regions_class_order": order}


def nested_labels(contacts: Contacts, labels: dict[str, Any], ignore: int | None,
                  thresholds: dict[str, float]) -> dict[str, Any] | None:
    """The fingerprint's ``nested_labels``: the chains (with label names) and the region suggestion, or None."""
    values = [v for k, v in labels.items() if isinstance(v, int) and v != 0 and k != "ignore"]
    chains = nested_chains(contacts, values, ignore, thresholds["nested_background_share"],
                           thresholds["nested_enclosure"])
    if not chains:
        return None
    name_of = {v: k for k, v in labels.items() if isinstance(v, int)}
    for c in chains:
        c["names"] = [name_of[v] for v in c["layers"]]
    return {"chains": chains, **region_suggestion(chains, labels)}
