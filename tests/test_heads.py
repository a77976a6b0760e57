"""Tests for hf_projections.heads: every registered type and every preset, specs, init and import hygiene."""

import ast
import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from hf_projections.heads import (
    PRESETS,
    PROJECTION_TYPES,
    PHMLinear,
    ProjectionSpecError,
    ResidualHead,
    build_projection,
    describe,
    describe_fields,
    init_from_linear,
    list_projections,
    resolve_spec,
)

D_IN, D_OUT = 12, 8
HEADS_DIR = Path(__file__).resolve().parents[1] / "hf_projections" / "heads"

# A few representative non-default specs per registered type (presets cover the defaults).
REPRESENTATIVE = {
    "linear-bias": {"type": "linear", "bias": True},
    "ffn-default": {"type": "ffn"},
    "ffn-norm-dropout": {
        "type": "ffn", "depth": 3, "expansion": 0.5, "activation": "relu", "norm": "layernorm", "dropout": 0.1,
        "bias": True, "residual": True, "residual_scale": "learnable",
    },
    "ffn-rms-tanh-linear-shortcut": {
        "type": "ffn", "depth": 4, "expansion": 1.5, "activation": "tanh", "norm": "rmsnorm", "residual": True,
        "shortcut": "linear",
    },
    "ffn-phm": {"type": "ffn", "linear_impl": "phm", "phm_n": 2, "bias": True, "residual": True},
    "glu-default": {"type": "glu"},
    "glu-bilinear-bias": {"type": "glu", "variant": "bilinear", "bias": True, "residual": True, "dropout": 0.2},
    "glu-phm": {"type": "glu", "variant": "reglu", "linear_impl": "phm", "phm_n": 4, "residual": True,
                "residual_scale": "learnable"},
    "phm-default": {"type": "phm"},
    "phm-n2-bias": {"type": "phm", "n": 2, "bias": True},
    "tversky-default": {"type": "tversky"},
    "tversky-small-res": {"type": "tversky", "num_features": 16, "residual": True, "residual_scale": "learnable"},
    "hourglass-default": {"type": "hourglass"},
    "hourglass-fixed-norm": {"type": "hourglass", "lift": "fixed", "norm": "layernorm", "blocks": 3, "bias": True,
                             "dropout": 0.1, "activation": "silu", "residual": True},
}
ALL_SPECS = {**{f"preset:{name}": name for name in PRESETS}, **REPRESENTATIVE}
RESIDUAL_SPECS = {key: spec for key, spec in ALL_SPECS.items() if resolve_spec(spec).get("residual")}
NON_RESIDUAL_NONLINEAR = {
    key: spec for key, spec in ALL_SPECS.items()
    if resolve_spec(spec)["type"] != "linear" and not resolve_spec(spec).get("residual")
}


def _build(spec, seed=0, d_in=D_IN, d_out=D_OUT):
    torch.manual_seed(seed)
    return build_projection(spec, d_in, d_out)


def test_every_registered_type_is_covered():
    covered = {resolve_spec(spec)["type"] for spec in ALL_SPECS.values()}
    assert covered == set(PROJECTION_TYPES)
    assert {"linear", "ffn", "glu", "phm", "tversky", "hourglass"} <= set(PROJECTION_TYPES)


def test_required_presets_exist():
    required = {"linear", "ffn2", "ffn2-x2", "ffn2-x2-res", "ffn3-x2-res", "glu-x2", "swiglu-x2-res", "geglu-x2-res"}
    assert required <= set(PRESETS)
    best = resolve_spec("ffn2-x2-res")
    assert (best["type"], best["depth"], best["expansion"], best["residual"]) == ("ffn", 2, 2.0, True)


@pytest.mark.parametrize("key", sorted(ALL_SPECS))
@pytest.mark.parametrize("shape", [(D_IN,), (3, D_IN), (2, 5, D_IN)])
def test_output_shape(key, shape):
    head = _build(ALL_SPECS[key])
    out = head(torch.randn(*shape))
    assert out.shape == shape[:-1] + (D_OUT,)
    assert torch.isfinite(out).all()
    assert (head.d_in, head.d_out) == (D_IN, D_OUT)


def _backward(head):
    head.train()
    torch.manual_seed(1)
    x = torch.randn(2, 5, D_IN)
    target = torch.randn(2, 5, D_OUT)
    (head(x) * target).sum().backward()


@pytest.mark.parametrize("key", sorted(ALL_SPECS))
def test_gradients_reach_every_parameter(key):
    head = _build(ALL_SPECS[key])
    _backward(head)
    for name, param in head.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in head.parameters())


@pytest.mark.parametrize("key", sorted(RESIDUAL_SPECS))
def test_gradients_after_identity_preserving_init(key):
    head = _build(ALL_SPECS[key], d_in=D_IN, d_out=D_OUT)
    init_from_linear(head, torch.randn(D_OUT, D_IN))
    _backward(head)
    grads = dict(head.named_parameters())
    for name, param in grads.items():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    # The zeroed output layer itself must learn, otherwise the branch would stay dead forever.
    zeroed = [name for name, p in grads.items() if p.grad.abs().sum() > 0 and not name.startswith("shortcut")]
    assert zeroed, "no branch parameter receives a non-zero gradient after init_from_linear"


@pytest.mark.parametrize("key", sorted(ALL_SPECS))
def test_spec_json_round_trip(key):
    head = _build(ALL_SPECS[key], seed=3)
    text = json.dumps(head.spec)
    assert resolve_spec(json.loads(text)) == head.spec
    rebuilt = _build(json.loads(text), seed=3)
    assert rebuilt.spec == head.spec
    assert type(rebuilt) is type(head)
    original, again = head.state_dict(), rebuilt.state_dict()
    assert list(original) == list(again)
    for name in original:
        assert original[name].shape == again[name].shape, name
        assert torch.equal(original[name], again[name]), name


@pytest.mark.parametrize("key", sorted(ALL_SPECS))
def test_seeded_init_is_deterministic_and_seed_dependent(key):
    first, second, other = _build(ALL_SPECS[key], seed=7), _build(ALL_SPECS[key], seed=7), _build(ALL_SPECS[key], seed=8)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, c) for a, c in zip(first.state_dict().values(), other.state_dict().values()))


def test_head_spec_is_a_copy():
    head = _build("ffn2-x2-res")
    head.spec["depth"] = 4
    assert head.spec["depth"] == 2


# ----------------------------------------------------------------------------------------------------------
# Identity-preserving initialisation
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(RESIDUAL_SPECS))
def test_init_from_linear_reproduces_the_map(key):
    head = _build(ALL_SPECS[key]).eval()
    weight = torch.randn(D_OUT, D_IN)
    assert init_from_linear(head, weight) is head
    x = torch.randn(4, 6, D_IN)
    assert torch.allclose(head(x), x @ weight.T, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "spec",
    [{"type": "ffn2-x2-res", "bias": True}, {"type": "swiglu-x2-res", "bias": True},
     {"type": "hourglass-x4-res", "bias": True}, {"type": "ffn2-x2-res-phm4", "bias": True}, {"type": "linear", "bias": True}],
)
def test_init_from_linear_with_bias(spec):
    head = _build(spec).eval()
    weight, bias = torch.randn(D_OUT, D_IN), torch.randn(D_OUT)
    init_from_linear(head, weight, bias)
    x = torch.randn(3, D_IN)
    assert torch.allclose(head(x), F.linear(x, weight, bias), atol=1e-6, rtol=0)


def test_init_from_linear_linear_head_is_exact_copy():
    head = _build("linear")
    weight = torch.randn(D_OUT, D_IN)
    init_from_linear(head, weight)
    assert torch.equal(head.linear.weight, weight)
    x = torch.randn(5, D_IN)
    assert torch.equal(head(x), F.linear(x, weight))


def test_init_from_linear_resets_learnable_scale():
    head = _build({"type": "ffn2-x2-res", "residual_scale": "learnable"})
    with torch.no_grad():
        head.branch_scale.fill_(3.0)
    weight = torch.randn(D_OUT, D_IN)
    init_from_linear(head, weight)
    assert head.branch_scale.item() == 1.0
    x = torch.randn(2, D_IN)
    assert torch.allclose(head(x), x @ weight.T, atol=1e-6, rtol=0)


@pytest.mark.parametrize("key", sorted(NON_RESIDUAL_NONLINEAR))
def test_init_from_linear_rejects_non_residual_heads(key):
    head = _build(ALL_SPECS[key])
    with pytest.raises(ValueError, match="residual"):
        init_from_linear(head, torch.randn(D_OUT, D_IN))


def test_init_from_linear_identity_shortcut():
    head = _build("ffn2-x2-res", d_in=8, d_out=8)
    assert head.shortcut is None
    with pytest.raises(ValueError, match="shortcut='linear'"):
        init_from_linear(head, torch.randn(8, 8))
    init_from_linear(head, torch.eye(8))
    x = torch.randn(3, 8)
    assert torch.equal(head(x), x)
    # With a learned shortcut any square map works.
    head = _build({"type": "ffn2-x2-res", "shortcut": "linear"}, d_in=8, d_out=8)
    weight = torch.randn(8, 8)
    init_from_linear(head, weight)
    assert torch.allclose(head(x), x @ weight.T, atol=1e-6, rtol=0)


def test_init_from_linear_bad_inputs():
    head = _build("ffn2-x2-res")
    with pytest.raises(ValueError, match="shape"):
        init_from_linear(head, torch.randn(D_IN, D_OUT))
    with pytest.raises(ValueError, match="bias"):
        init_from_linear(head, torch.randn(D_OUT, D_IN), torch.randn(D_OUT + 1))
    with pytest.raises(ValueError, match="bias=true"):
        init_from_linear(head, torch.randn(D_OUT, D_IN), torch.randn(D_OUT))
    with pytest.raises(ValueError, match="bias"):
        init_from_linear(_build("tversky-res"), torch.randn(D_OUT, D_IN), torch.randn(D_OUT))
    # A zero bias is representable without a bias parameter.
    init_from_linear(head, torch.randn(D_OUT, D_IN), torch.zeros(D_OUT))


# ----------------------------------------------------------------------------------------------------------
# describe
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(ALL_SPECS))
def test_describe_counts_params(key):
    head = _build(ALL_SPECS[key])
    info = describe(head)
    assert info["params"] == sum(p.numel() for p in head.parameters())
    assert info["type"] == head.spec["type"]
    assert info["spec"] == head.spec
    assert isinstance(info["macs_per_token"], int) and info["macs_per_token"] > 0
    json.dumps(info)


def _expected_macs(d_in, d_out):
    h2 = 2 * d_in
    skip = d_in * d_out
    return {
        "linear": d_in * d_out,
        "phm4": d_in * d_out,
        "ffn1-res": d_in * d_out + skip,
        "ffn2": d_in * d_in + d_in * d_out,
        "ffn2-x2": d_in * h2 + h2 * d_out,
        "ffn2-x2-res": d_in * h2 + h2 * d_out + skip,
        "ffn3-x2-res": d_in * h2 + h2 * h2 + h2 * d_out + skip,
        "glu-x2": 2 * d_in * h2 + h2 * d_out,
        "swiglu-x2-res": 2 * d_in * h2 + h2 * d_out + skip,
        "tversky": d_in * 128 + 3 * 128 * d_out,
        "hourglass-x4": d_in * 4 * d_in + 2 * (2 * 4 * d_in * d_in) + 4 * d_in * d_out,
    }


@pytest.mark.parametrize("d_in,d_out", [(D_IN, D_OUT), (384, 128)])
def test_describe_macs_match_hand_counts(d_in, d_out):
    for name, macs in _expected_macs(d_in, d_out).items():
        assert describe(build_projection(name, d_in, d_out))["macs_per_token"] == macs, name


def test_describe_params_of_the_paper_heads():
    assert describe(build_projection("linear", 384, 128))["params"] == 384 * 128
    assert describe(build_projection("ffn2-x2-res", 384, 128))["params"] == 384 * 768 + 768 * 128 + 384 * 128
    phm = describe(build_projection("phm4", 384, 128))
    assert phm["params"] == 4 ** 3 + 384 * 128 // 4 and phm["macs_per_token"] == 384 * 128


# ----------------------------------------------------------------------------------------------------------
# Bad specs
# ----------------------------------------------------------------------------------------------------------

BAD_SPECS = [
    ("fnn", D_IN, D_OUT, "unknown projection type 'fnn'"),
    ({"type": "fnn"}, D_IN, D_OUT, "known types: ffn, glu"),
    ({"depth": 2}, D_IN, D_OUT, "missing 'type'"),
    ({"type": 3}, D_IN, D_OUT, "'type' must be a str"),
    (["ffn"], D_IN, D_OUT, "preset name"),
    ({"type": "ffn", "depht": 2}, D_IN, D_OUT, "ffn: unknown argument 'depht'; allowed: activation, bias, depth"),
    ({"type": "linear", "residual": True}, D_IN, D_OUT, "linear: unknown argument 'residual'"),
    ({"type": "ffn", "depth": 7}, D_IN, D_OUT, "ffn.depth must be an int in 1..4, got 7"),
    ({"type": "ffn", "depth": 0}, D_IN, D_OUT, "ffn.depth"),
    ({"type": "ffn", "depth": 2.0}, D_IN, D_OUT, "ffn.depth must be an int"),
    ({"type": "ffn", "depth": True}, D_IN, D_OUT, "ffn.depth"),
    ({"type": "ffn", "expansion": 0}, D_IN, D_OUT, "ffn.expansion"),
    ({"type": "ffn", "expansion": -1.0}, D_IN, D_OUT, "ffn.expansion"),
    ({"type": "ffn", "expansion": float("nan")}, D_IN, D_OUT, "ffn.expansion"),
    ({"type": "ffn", "expansion": "2"}, D_IN, D_OUT, "ffn.expansion"),
    ({"type": "ffn", "expansion": 0.01}, D_IN, D_OUT, "ffn.expansion=0.01 gives a hidden width"),
    ({"type": "ffn", "dropout": 1.0}, D_IN, D_OUT, "ffn.dropout must be a float in [0.0, 1.0)"),
    ({"type": "ffn", "dropout": -0.1}, D_IN, D_OUT, "ffn.dropout"),
    ({"type": "ffn", "activation": "swish"}, D_IN, D_OUT, "ffn.activation must be one of identity|relu|gelu|silu|tanh"),
    ({"type": "ffn", "activation": None}, D_IN, D_OUT, "ffn.activation"),
    ({"type": "ffn", "norm": "batchnorm"}, D_IN, D_OUT, "ffn.norm"),
    ({"type": "ffn", "bias": "yes"}, D_IN, D_OUT, "ffn.bias must be a bool"),
    ({"type": "ffn", "residual": 1}, D_IN, D_OUT, "ffn.residual must be a bool"),
    ({"type": "ffn", "residual_scale": "fixed"}, D_IN, D_OUT, "ffn.residual_scale"),
    ({"type": "ffn", "residual": True, "shortcut": "identity"}, D_IN, D_OUT, "ffn.shortcut='identity' needs d_in == d_out"),
    ({"type": "ffn", "linear_impl": "sparse"}, D_IN, D_OUT, "ffn.linear_impl"),
    ({"type": "ffn", "linear_impl": "phm", "phm_n": 5}, D_IN, D_OUT, "ffn.phm_n=5 must divide"),
    ({"type": "glu", "variant": "sigmoid"}, D_IN, D_OUT, "glu.variant must be one of glu|reglu|geglu|swiglu|bilinear"),
    ({"type": "glu", "depth": 2}, D_IN, D_OUT, "glu: unknown argument 'depth'"),
    ({"type": "phm", "n": 5}, D_IN, D_OUT, "phm.n=5 must divide"),
    ({"type": "phm", "n": 0}, D_IN, D_OUT, "phm.n"),
    ({"type": "tversky", "num_features": 0}, D_IN, D_OUT, "tversky.num_features"),
    ({"type": "tversky", "intersection": "min"}, D_IN, D_OUT, "tversky.intersection"),
    ({"type": "hourglass", "blocks": 9}, D_IN, D_OUT, "hourglass.blocks"),
    ({"type": "hourglass", "lift": "frozen"}, D_IN, D_OUT, "hourglass.lift"),
    ({"type": "ffn2-x2-res", "depht": 1}, D_IN, D_OUT, "ffn: unknown argument 'depht'"),
    ("ffn2-x2-res", 0, D_OUT, "d_in must be a positive int"),
    ("ffn2-x2-res", D_IN, -3, "d_out must be a positive int"),
    ("ffn2-x2-res", 12.0, D_OUT, "d_in must be a positive int"),
    ("ffn2-x2-res", True, D_OUT, "d_in must be a positive int"),
    ("linear", D_IN, "8", "d_out must be a positive int"),
]


@pytest.mark.parametrize("spec,d_in,d_out,message", BAD_SPECS, ids=[str(i) for i in range(len(BAD_SPECS))])
def test_bad_specs_raise_naming_the_field(spec, d_in, d_out, message):
    with pytest.raises(ValueError) as info:
        build_projection(spec, d_in, d_out)
    assert message in str(info.value)


def test_wrong_value_types_are_also_type_errors():
    with pytest.raises(TypeError, match="ffn.bias"):
        resolve_spec({"type": "ffn", "bias": "false"})
    with pytest.raises(TypeError, match="d_in"):
        build_projection("linear", "12", 8)
    assert issubclass(ProjectionSpecError, ValueError)


def test_unknown_type_message_lists_presets():
    with pytest.raises(ValueError, match="presets: .*ffn2-x2-res"):
        resolve_spec("nope")


# ----------------------------------------------------------------------------------------------------------
# Registry, presets, semantics of individual heads
# ----------------------------------------------------------------------------------------------------------


def test_list_projections_is_complete_and_json():
    listing = list_projections()
    json.dumps(listing)
    assert set(listing["types"]) == set(PROJECTION_TYPES)
    assert set(listing["presets"]) == set(PRESETS)
    assert listing["types"]["ffn"]["depth"] == 2 and listing["types"]["linear"] == {"bias": False}
    for name, spec in listing["presets"].items():
        assert spec == resolve_spec(spec), name
        assert set(spec) == {"type"} | set(listing["types"][spec["type"]]), name
    assert set(describe_fields("ffn")) == set(listing["types"]["ffn"])


def test_preset_dict_override():
    spec = resolve_spec({"type": "ffn2-x2-res", "dropout": 0.1, "expansion": 4})
    assert spec["type"] == "ffn" and spec["residual"] is True and spec["dropout"] == 0.1
    assert spec["expansion"] == 4.0 and isinstance(spec["expansion"], float)


def test_expansion_rounds_to_an_integer_width():
    head = build_projection({"type": "ffn", "expansion": 0.5}, 13, 4)
    assert head.hidden == round(0.5 * 13)
    assert head(torch.randn(2, 13)).shape == (2, 4)


def test_ffn_matches_manual_computation():
    head = _build({"type": "ffn", "depth": 2, "activation": "relu", "bias": True, "residual": True}).eval()
    x = torch.randn(4, D_IN)
    first, second = head.layers
    expected = head.shortcut(x) + F.linear(torch.relu(F.linear(x, first.weight, first.bias)), second.weight, second.bias)
    assert torch.allclose(head(x), expected, atol=1e-6)
    assert len(_build({"type": "ffn", "depth": 1}).layers) == 1


def test_ffn_identity_activation_is_linear_overall():
    head = _build({"type": "ffn", "depth": 3, "activation": "identity"})
    x = torch.randn(3, D_IN)
    w = head.layers[2].weight @ head.layers[1].weight @ head.layers[0].weight
    assert torch.allclose(head(x), x @ w.T, atol=1e-5)


@pytest.mark.parametrize("variant,act", [("glu", torch.sigmoid), ("reglu", torch.relu), ("geglu", F.gelu),
                                         ("swiglu", F.silu), ("bilinear", lambda t: t)])
def test_glu_variants_match_manual_computation(variant, act):
    head = _build({"type": "glu", "variant": variant}).eval()
    x = torch.randn(4, D_IN)
    hidden = act(x @ head.gate_proj.weight.T) * (x @ head.value_proj.weight.T)
    assert torch.allclose(head(x), hidden @ head.out_proj.weight.T, atol=1e-6)
    assert head.hidden == 2 * D_IN


def test_learnable_residual_scale_scales_the_branch():
    head = _build({"type": "ffn", "residual": True, "residual_scale": "learnable"}).eval()
    x = torch.randn(3, D_IN)
    with torch.no_grad():
        head.branch_scale.zero_()
    assert torch.allclose(head(x), head.shortcut(x))
    with torch.no_grad():
        head.branch_scale.fill_(2.0)
    assert torch.allclose(head(x), head.shortcut(x) + 2 * head.branch_forward(x), atol=1e-6)


def test_identity_shortcut_when_dims_match():
    head = _build("ffn2-x2-res", d_in=8, d_out=8).eval()
    assert head.shortcut is None and "shortcut.weight" not in head.state_dict()
    x = torch.randn(2, 8)
    assert torch.allclose(head(x), x + head.branch_forward(x), atol=1e-6)
    assert _build({"type": "ffn2-x2-res", "shortcut": "linear"}, d_in=8, d_out=8).shortcut is not None


def test_phm_weight_is_a_sum_of_kronecker_products():
    layer = PHMLinear(12, 8, 4, bias=True)
    expected = sum(torch.kron(layer.rules[i], layer.blocks[i]) for i in range(4))
    assert torch.allclose(layer.weight(), expected, atol=1e-6)
    x = torch.randn(3, 12)
    assert torch.allclose(layer(x), x @ expected.T + layer.bias, atol=1e-5)
    assert sum(p.numel() for p in layer.parameters()) == 4 ** 3 + 12 * 8 // 4 + 8


def test_phm_init_variance_matches_nn_linear():
    torch.manual_seed(0)
    weight = PHMLinear(256, 256, 4).weight().detach()
    expected = 1.0 / (3 * 256)
    assert 0.7 * expected < weight.var().item() < 1.3 * expected


def _naive_tversky(x, features, prototypes, theta, alpha, beta):
    """Loop-over-features reference implementation of the Tversky projection equations."""
    out = torch.zeros(prototypes.shape[0])
    for j, proto in enumerate(prototypes):
        common = x_only = p_only = 0.0
        for omega in features:
            a, p = float((x @ omega).detach()), float((proto @ omega).detach())
            if a > 0 and p > 0:
                common += a * p
            if a > 0 and p <= 0:
                x_only += a
            if p > 0 and a <= 0:
                p_only += p
        out[j] = theta * common - alpha * x_only - beta * p_only
    return out


def test_tversky_matches_the_equations():
    head = _build({"type": "tversky", "num_features": 10}).eval()
    with torch.no_grad():
        head.theta.fill_(1.3)
        head.alpha.fill_(0.4)
        head.beta.fill_(0.7)
    x = torch.randn(3, D_IN)
    got = head(x)
    for row in range(3):
        expected = _naive_tversky(x[row], head.features, head.prototypes, 1.3, 0.4, 0.7)
        assert torch.allclose(got[row], expected, atol=1e-5)


def test_hourglass_structure_and_fixed_lift():
    head = _build({"type": "hourglass", "width": 2.0, "bottleneck": 0.5, "blocks": 2, "lift": "fixed"})
    assert (head.wide, head.narrow) == (2 * D_IN, D_IN // 2)
    names = dict(head.named_parameters())
    assert "lift.weight" not in names and "lift.weight" in head.state_dict()
    x = torch.randn(3, D_IN)
    h = x @ head.lift.weight.T
    for block in head.blocks:
        h = h + block.up(F.gelu(block.down(h)))
    assert torch.allclose(head(x), head.proj(h), atol=1e-5)


def test_dropout_only_in_training():
    head = _build({"type": "ffn", "dropout": 0.5})
    x = torch.randn(4, D_IN)
    head.eval()
    assert torch.equal(head(x), head(x))
    head.train()
    torch.manual_seed(0)
    a = head(x)
    torch.manual_seed(1)
    assert not torch.equal(a, head(x))


def test_reset_parameters_undoes_zero_init():
    head = _build("ffn2-x2-res")
    init_from_linear(head, torch.randn(D_OUT, D_IN))
    assert torch.count_nonzero(head.layers[-1].weight) == 0
    head.reset_parameters()
    assert torch.count_nonzero(head.layers[-1].weight) > 0
    tversky = _build("tversky-res")
    init_from_linear(tversky, torch.randn(D_OUT, D_IN))
    tversky.reset_parameters()
    assert tversky.theta.item() == 1.0


def test_heads_are_residual_heads_when_expected():
    for key, spec in ALL_SPECS.items():
        head = _build(spec)
        assert isinstance(head, ResidualHead) == ("residual" in head.spec), key


# ----------------------------------------------------------------------------------------------------------
# Import hygiene: heads/ must be copyable flat next to a checkpoint
# ----------------------------------------------------------------------------------------------------------


def _module_files():
    return sorted(HEADS_DIR.glob("*.py"))


@pytest.mark.parametrize("path", _module_files(), ids=lambda p: p.name)
def test_heads_import_only_stdlib_torch_and_single_dot_siblings(path):
    allowed_roots = set(sys.stdlib_module_names) | {"torch"}
    siblings = {p.stem for p in _module_files()}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] in allowed_roots, f"{path.name}: import {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module.split(".")[0] in allowed_roots, f"{path.name}: from {node.module} import"
            else:
                assert node.level == 1, f"{path.name}: only single-dot relative imports are allowed"
                assert node.module is not None, f"{path.name}: 'from . import x' is not allowed"
                assert node.module in siblings and "." not in node.module, f"{path.name}: from .{node.module}"
    assert path.stem not in {"configuration_hf_projections", "modeling_hf_projections"}
    assert path.stem == "__init__" or path.stem not in sys.stdlib_module_names


def test_transformers_remote_code_loader_accepts_the_heads():
    """transformers' own trust_remote_code scanner finds every sibling and needs nothing beyond torch."""
    dynamic = pytest.importorskip("transformers.dynamic_module_utils")
    entry_points = [HEADS_DIR / name for name in ("registry.py", "describe.py", "linear_init.py", "layer_mix.py")]
    needed = set()
    for entry in entry_points:
        files = {Path(f).name for f in dynamic.get_relative_import_files(str(entry))} | {entry.name}
        needed |= files
        for name in files:
            assert set(dynamic.get_imports(str(HEADS_DIR / name))) <= set(sys.stdlib_module_names) | {"torch"}, name
    assert needed == {p.name for p in _module_files()} - {"__init__.py"}


def test_heads_work_when_copied_flat(tmp_path, monkeypatch):
    package = tmp_path / "flat_heads_copy"
    package.mkdir()
    for path in _module_files():
        if path.name != "__init__.py":
            shutil.copy(path, package / path.name)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry = importlib.import_module("flat_heads_copy.registry")
        linear_init = importlib.import_module("flat_heads_copy.linear_init")
        torch.manual_seed(0)
        copied = registry.build_projection("swiglu-x2-res", D_IN, D_OUT)
        original = _build("swiglu-x2-res", seed=0)
        for (name, a), (_, b) in zip(copied.state_dict().items(), original.state_dict().items()):
            assert torch.equal(a, b), name
        weight = torch.randn(D_OUT, D_IN)
        linear_init.init_from_linear(copied, weight)
        x = torch.randn(2, D_IN)
        assert torch.allclose(copied(x), x @ weight.T, atol=1e-6)
        assert type(copied).__module__ == "flat_heads_copy.glu"
    finally:
        for name in [m for m in sys.modules if m == "flat_heads_copy" or m.startswith("flat_heads_copy.")]:
            del sys.modules[name]

