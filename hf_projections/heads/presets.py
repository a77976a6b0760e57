"""Named presets: readable names for the projection variants of Clavié et al. 2025 and a few extras.

Names read ``<type><depth>-x<expansion>[-res]``: ``ffn2-x2-res`` is a 2-layer FFN with a hidden width of
``2 * d_in`` and a residual connection, the paper's best variant. Values are partial specs; the registry
fills in every other field with its default (activation GELU, no norm, no dropout, no bias, shortcut
``auto``, no residual scale).
"""

PRESETS = {
    # ColBERT's original single linear layer.
    "linear": {"type": "linear"},
    # Paper variants: deeper / upscaled / residual FFNs.
    "ffn1-res": {"type": "ffn", "depth": 1, "residual": True},
    "ffn2": {"type": "ffn", "depth": 2, "expansion": 1.0},
    "ffn2-x2": {"type": "ffn", "depth": 2, "expansion": 2.0},
    "ffn2-res": {"type": "ffn", "depth": 2, "expansion": 1.0, "residual": True},
    "ffn2-x2-res": {"type": "ffn", "depth": 2, "expansion": 2.0, "residual": True},
    "ffn2-x4-res": {"type": "ffn", "depth": 2, "expansion": 4.0, "residual": True},
    "ffn3-x2-res": {"type": "ffn", "depth": 3, "expansion": 2.0, "residual": True},
    # The sentence-transformers / PyLate residual Dense stack: no activation (a linear map overall).
    "ffn2-x2-res-identity": {"type": "ffn", "depth": 2, "expansion": 2.0, "activation": "identity", "residual": True},
    # Paper variants: GLU blocks (Shazeer 2020).
    "glu-x2": {"type": "glu", "variant": "glu", "expansion": 2.0},
    "glu-x2-res": {"type": "glu", "variant": "glu", "expansion": 2.0, "residual": True},
    "swiglu-x2": {"type": "glu", "variant": "swiglu", "expansion": 2.0},
    "swiglu-x2-res": {"type": "glu", "variant": "swiglu", "expansion": 2.0, "residual": True},
    "geglu-x2-res": {"type": "glu", "variant": "geglu", "expansion": 2.0, "residual": True},
    "reglu-x2-res": {"type": "glu", "variant": "reglu", "expansion": 2.0, "residual": True},
    # Beyond the paper.
    "phm4": {"type": "phm", "n": 4},
    "ffn2-x2-res-phm4": {"type": "ffn", "depth": 2, "expansion": 2.0, "residual": True, "linear_impl": "phm", "phm_n": 4},
    "tversky": {"type": "tversky", "num_features": 128},
    "tversky-res": {"type": "tversky", "num_features": 128, "residual": True},
    "hourglass-x4": {"type": "hourglass", "width": 4.0, "bottleneck": 1.0, "blocks": 2},
    "hourglass-x4-res": {"type": "hourglass", "width": 4.0, "bottleneck": 1.0, "blocks": 2, "residual": True},
}
