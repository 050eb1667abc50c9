"""Layer freezing (train.guard.freeze_layers): the lowest N transformer blocks keep their base weights."""

from __future__ import annotations

from tuneloop.errors import ConfigError


def transformer_blocks(model):
    """The model's list of transformer blocks (decoder layers), lowest first."""
    import torch

    count = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ConfigError("train.guard.freeze_layers: could not find this model's transformer blocks (a list of "
                      f"{count} layers); remove the key for this model.")


def freeze_lowest_blocks(model, count: int) -> int:
    """Stop gradients in the lowest `count` blocks; return how many parameters were frozen."""
    blocks = transformer_blocks(model)
    if count >= len(blocks):
        raise ConfigError(f"train.guard.freeze_layers={count}: the model has {len(blocks)} blocks, so nothing would "
                          f"train; use at most {len(blocks) - 1}.")
    frozen = 0
    for block in blocks[:count]:
        for parameter in block.parameters():
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen
