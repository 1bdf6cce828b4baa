"""Bundled knowledge distillation: recover a compressed model by learning from its teacher."""
