"""Reading nnU-Net checkpoints and loading a base's weights into a network: the one loader the search's
continuations and the exported fine-tune trainers share (both run it from ``nnUNetTrainer_autoloss``)."""
from __future__ import annotations

from pathlib import Path

import torch

from autoloss.errors import AutolossError

HEAD_KEYS = (".seg_layers.",)  # the output heads; nnU-Net's own load_pretrained_weights leaves them fresh


def read_checkpoint(path: str | Path) -> dict:
    """An nnU-Net checkpoint, on the CPU whatever device wrote it; one line naming the file when unreadable."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - truncated zip, pickle errors, ...: one message
        raise AutolossError(f"{path}: not a readable nnU-Net checkpoint ({type(exc).__name__}: {exc})") from None


def load_base_weights(network: torch.nn.Module, checkpoint: str | Path, heads: bool = True) -> int:
    """Copy a base's network weights into ``network``; returns how many tensors were copied.

    ``heads=True`` (what autoloss does): every weight, the output heads included, so a continuation starts from
    the base's own predictions. ``heads=False`` is nnU-Net's ``load_pretrained_weights`` (``nnUNetv2_train
    -pretrained_weights``): the ``.seg_layers.`` heads keep their initialisation. Every other key must exist with
    the same shape (one line naming the first that does not). The checkpoint is mapped to the CPU first, so a base
    trained on a GPU continues on any device."""
    weights = read_checkpoint(checkpoint)["network_weights"]
    module = _bare(network)
    own = module.state_dict()
    skipped = () if heads else HEAD_KEYS
    kept = {k: v for k, v in weights.items() if k in own and not any(s in k for s in skipped)}
    for key, value in own.items():
        if any(s in key for s in skipped):
            continue
        if key not in weights or weights[key].shape != value.shape:
            found = tuple(weights[key].shape) if key in weights else "missing"
            raise AutolossError(f"{checkpoint}: weight {key} is {found} there but {tuple(value.shape)} in this "
                                "network: the base was trained with other plans or another configuration")
    own.update(kept)
    module.load_state_dict(own)
    return len(kept)


def same_body_weights(network: torch.nn.Module, checkpoint: str | Path) -> bool:
    """Whether every weight but the heads equals the checkpoint's (what ``-pretrained_weights`` would have loaded)."""
    weights = read_checkpoint(checkpoint)["network_weights"]
    own = _bare(network).state_dict()
    return all(k in weights and torch.equal(v.cpu(), weights[k]) for k, v in own.items()
               if not any(s in k for s in HEAD_KEYS))


def _bare(network: torch.nn.Module) -> torch.nn.Module:
    # the module whose state_dict nnU-Net saves: not the DDP wrapper, not the torch.compile wrapper
    from torch._dynamo import OptimizedModule
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(network, DistributedDataParallel):
        network = network.module
    return network._orig_mod if isinstance(network, OptimizedModule) else network
