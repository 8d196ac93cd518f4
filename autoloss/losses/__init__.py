"""Segmentation losses of the Loss Odyssey study for nnU-Net v2, built from a LossSpec through one registry.

    from autoloss.losses import build_loss
    loss = build_loss(LossSpec("DiceFocal", {"focal.gamma": 2.0}), batch_dice=True)
    value = loss(logits, target)          # logits (B, C, *spatial), nnU-Net target (B, 1, *spatial)

Modules: ``base`` (shared inputs and reductions), ``distribution`` (CE, WCE, TopK, Focal, DPCE), ``region``
(Dice, IoU, SS, Tversky, GDice, FocalTversky, Asym, pGDice), ``lovasz``, ``boundary`` (BD, HD) and ``distance``
(exact EDT on the device), ``compound`` (the weighted, scheduled sum every loss is, and ELL), ``registry``.
"""
from autoloss.losses.compound import AutolossLoss, CompoundLoss
from autoloss.losses.registry import (BASELINE_LOSS, LOSS_NAMES, REGISTRY, TERMS, LossDef, ParamDef, TermDef, build_loss,
                                      baseline_spec, format_loss_table, get_loss_def, list_losses, validate_spec)

__all__ = [
    "AutolossLoss", "BASELINE_LOSS", "CompoundLoss", "baseline_spec", "LOSS_NAMES", "REGISTRY", "TERMS", "LossDef", "ParamDef", "TermDef",
    "build_loss", "format_loss_table", "get_loss_def", "list_losses", "validate_spec",
]
