"""The PEFT layer of a projection adapter: it stands where the model's head (or layer mix) was and holds it per
adapter name, under attribute names with the registered prefix (``hf_projection_head``, ``hf_projection_layer_mix``),
so PEFT finds, saves and loads exactly these tensors."""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from hf_projections.modeling.adapter_format import ADAPTER_SLOTS


class ProjectionAdapterLayer(nn.Module, BaseTunerLayer):
    """Holds a model's head (or layer mix) per adapter name, in place of the module itself.

    ``forward`` runs the active adapter's module: the head maps `(batch, tokens, d_in)` -> `(batch, tokens, dim)`,
    the layer mix a list of `(batch, tokens, hidden)` states -> `(batch, tokens, d_in)`. Inputs are cast to the
    module's dtype (PEFT keeps adapter weights in float32 under a half-precision encoder).
    """

    adapter_layer_names: tuple[str, ...] = ()  # one attribute name, set by each subclass below

    def __init__(self, adapter_name: str, module: nn.Module):
        super().__init__()
        setattr(self, self.adapter_layer_names[0], nn.ModuleDict({adapter_name: module}))
        self._active_adapter = adapter_name

    def active_module(self) -> nn.Module:
        """The active adapter's module."""
        if self.disable_adapters:
            raise RuntimeError("the projection adapter is disabled; the encoder alone has no head to compute with")
        modules = getattr(self, self.adapter_layer_names[0])
        active = [name for name in self.active_adapters if name in modules]
        if len(active) != 1:
            raise RuntimeError(f"one projection adapter must be active, got {self.active_adapters} of {sorted(modules)}")
        return modules[active[0]]

    def forward(self, inputs: Any) -> torch.Tensor:
        module = self.active_module()
        dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
        if dtype is not None:
            inputs = inputs.to(dtype) if torch.is_tensor(inputs) else [x.to(dtype) for x in inputs]
        return module(inputs)

    def _move_adapter_to_device_of_base_layer(self, adapter_name: str, device=None) -> None:
        """No base layer to follow: the adapter's tensors stay where they were loaded."""


class ProjectionHeadLayer(ProjectionAdapterLayer):
    """The head: `(batch, tokens, d_in)` -> `(batch, tokens, dim)` (single-vector models: `(batch, d_in)` in)."""

    adapter_layer_names = (ADAPTER_SLOTS["projection"],)


class LayerMixLayer(ProjectionAdapterLayer):
    """The layer mix: a list of `(batch, tokens, hidden)` states -> `(batch, tokens, d_in)`."""

    adapter_layer_names = (ADAPTER_SLOTS["layer_mix"],)


_LAYER_CLASSES = {"projection": ProjectionHeadLayer, "layer_mix": LayerMixLayer}


def adapter_layer(role: str, adapter_name: str, module: nn.Module) -> ProjectionAdapterLayer:
    """The PEFT layer holding ``module`` as the ``role`` (``projection`` or ``layer_mix``) of ``adapter_name``."""
    return _LAYER_CLASSES[role](adapter_name, module)
