"""Property tests for the projection-spec validator: generated specs, valid or broken in one place.

Every valid spec must build and run forward on a tiny input; every broken one must raise ``ValueError`` (or
``TypeError``) whose message names the broken field. Validity is decided by an oracle written from the
documented rules (field ranges, hidden width ``round(multiple * d_in) >= 1``, PHM divisibility, identity
shortcut needs ``d_in == d_out``), independently of the implementation.
"""

import json

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hf_projections.heads import build_projection

ACTIVATIONS = ["identity", "relu", "gelu", "silu", "tanh"]
NORMS = ["none", "layernorm", "rmsnorm"]
RESIDUAL = {
    "residual": st.booleans(),
    "residual_scale": st.sampled_from(["none", "learnable"]),
    "shortcut": st.sampled_from(["auto", "identity", "linear"]),
}
EXPANSION = st.one_of(st.sampled_from([0.5, 1, 1.5, 2, 4]), st.floats(0.01, 4.0))
DROPOUT = st.floats(0.0, 0.99)
PHM = {"linear_impl": st.sampled_from(["dense", "phm"]), "phm_n": st.sampled_from([1, 2, 3, 4])}

# type -> field -> (strategy for valid values, kind, kind args) ; kinds drive the invalid-value generator.
VALID = {
    "linear": {"bias": (st.booleans(), "bool", None)},
    "phm": {"n": (st.sampled_from([1, 2, 4]), "int", (1, 64)), "bias": (st.booleans(), "bool", None)},
    "ffn": {
        "depth": (st.integers(1, 4), "int", (1, 4)),
        "expansion": (EXPANSION, "float_pos", 64.0),
        "activation": (st.sampled_from(ACTIVATIONS), "choice", ACTIVATIONS),
        "norm": (st.sampled_from(NORMS), "choice", NORMS),
        "dropout": (DROPOUT, "prob", None),
        "bias": (st.booleans(), "bool", None),
        **{k: (v, "bool" if k == "residual" else "choice", None) for k, v in RESIDUAL.items()},
        **{k: (v, "choice" if k == "linear_impl" else "int", (1, 64)) for k, v in PHM.items()},
    },
    "glu": {
        "variant": (st.sampled_from(["glu", "reglu", "geglu", "swiglu", "bilinear"]), "choice", None),
        "expansion": (EXPANSION, "float_pos", 64.0),
        "dropout": (DROPOUT, "prob", None),
        "bias": (st.booleans(), "bool", None),
        **{k: (v, "bool" if k == "residual" else "choice", None) for k, v in RESIDUAL.items()},
        **{k: (v, "choice" if k == "linear_impl" else "int", (1, 64)) for k, v in PHM.items()},
    },
    "tversky": {
        "num_features": (st.integers(1, 24), "int", (1, 65536)),
        "intersection": (st.just("product"), "choice", None),
        "difference": (st.just("ignorematch"), "choice", None),
        **{k: (v, "bool" if k == "residual" else "choice", None) for k, v in RESIDUAL.items()},
    },
    "hourglass": {
        "width": (EXPANSION, "float_pos", 64.0),
        "bottleneck": (EXPANSION, "float_pos", 64.0),
        "blocks": (st.integers(1, 3), "int", (1, 8)),
        "activation": (st.sampled_from(ACTIVATIONS), "choice", ACTIVATIONS),
        "norm": (st.sampled_from(NORMS), "choice", NORMS),
        "dropout": (DROPOUT, "prob", None),
        "bias": (st.booleans(), "bool", None),
        "lift": (st.sampled_from(["learned", "fixed"]), "choice", None),
        **{k: (v, "bool" if k == "residual" else "choice", None) for k, v in RESIDUAL.items()},
    },
}
KNOWN_CHOICES = {
    "identity", "relu", "gelu", "silu", "tanh", "none", "layernorm", "rmsnorm", "auto", "linear", "learnable", "dense",
    "phm", "glu", "reglu", "geglu", "swiglu", "bilinear", "product", "ignorematch", "learned", "fixed",
}
DEFAULTS = {"depth": 2, "expansion": 2.0, "residual": False, "shortcut": "auto", "linear_impl": "dense", "phm_n": 4,
            "n": 4, "width": 2.0, "bottleneck": 0.5}


def _invalid_value(draw, kind, arg):
    """A value of the wrong type or out of range for a field of ``kind``."""
    wrong_type = {
        "bool": st.sampled_from([0, 1, "true", None, 1.0]),
        "int": st.sampled_from([1.0, "2", True, None, [1]]),
        "float_pos": st.sampled_from(["2", True, None, [2.0]]),
        "prob": st.sampled_from(["0.1", False, None]),
        "choice": st.sampled_from([1, True, None, 0.5]),
    }[kind]
    if kind == "bool":
        return draw(wrong_type)
    if kind == "int":
        low, high = arg
        out_of_range = st.one_of(st.integers(low - 100, low - 1), st.integers(high + 1, high + 100))
    elif kind == "float_pos":
        out_of_range = st.one_of(
            st.floats(-10.0, 0.0), st.floats(64.001, 1e6), st.just(float("nan")), st.just(float("inf"))
        )
    elif kind == "prob":
        out_of_range = st.one_of(st.floats(1.0, 10.0), st.floats(-10.0, -1e-6), st.just(float("nan")))
    else:
        out_of_range = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", max_size=12).filter(lambda s: s not in KNOWN_CHOICES)
    return draw(st.one_of(wrong_type, out_of_range))


def _build_time_errors(type_name, args, d_in, d_out):
    """Fields that the documented build-time rules reject for otherwise valid arguments (empty = valid)."""
    get = lambda key: args.get(key, DEFAULTS.get(key))  # noqa: E731
    bad = set()
    widths = [d_in, d_out]
    if type_name == "ffn" and get("depth") > 1 or type_name == "glu":
        hidden = int(round(get("expansion") * d_in))
        if hidden < 1:
            bad.add(f"{type_name}.expansion")
        widths.append(hidden)
    if type_name == "hourglass":
        for key in ("width", "bottleneck"):
            if int(round(get(key) * d_in)) < 1:
                bad.add(f"hourglass.{key}")
    if type_name in ("ffn", "glu") and get("linear_impl") == "phm" and not bad:
        if any(w % get("phm_n") for w in widths):
            bad.add(f"{type_name}.phm_n")
    if type_name == "phm" and (d_in % get("n") or d_out % get("n")):
        bad.add("phm.n")
    if type_name in ("ffn", "glu", "tversky", "hourglass") and get("residual") and get("shortcut") == "identity":
        if d_in != d_out:
            bad.add(f"{type_name}.shortcut")
    return bad


@st.composite
def spec_cases(draw):
    """(spec, d_in, d_out, set of field names any of which the error must name; empty set = valid)."""
    type_name = draw(st.sampled_from(sorted(VALID)))
    fields = VALID[type_name]
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=len(fields)))
    args = {name: draw(fields[name][0]) for name in chosen}
    d_in, d_out = draw(st.sampled_from([4, 6, 8, 12])), draw(st.sampled_from([4, 6, 8]))
    mutation = draw(st.sampled_from(["none", "none", "value", "unknown", "dims"]))
    if mutation == "value":
        name = draw(st.sampled_from(sorted(fields)))
        _, kind, arg = fields[name]
        args[name] = _invalid_value(draw, kind, arg)
        return {"type": type_name, **args}, d_in, d_out, {f"{type_name}.{name}"}
    if mutation == "unknown":
        name = draw(st.sampled_from(["depht", "expanson", "actvation", "Bias", "dims", "residual_sclae", "k"]))
        if name not in fields:
            args[name] = 1
            return {"type": type_name, **args}, d_in, d_out, {f"unknown argument '{name}'"}
    if mutation == "dims":
        which = draw(st.sampled_from(["d_in", "d_out"]))
        bad = draw(st.sampled_from([0, -1, 2.0, True, "8", None]))
        d_in, d_out = (bad, d_out) if which == "d_in" else (d_in, bad)
        return {"type": type_name, **args}, d_in, d_out, {which}
    return {"type": type_name, **args}, d_in, d_out, _build_time_errors(type_name, args, d_in, d_out)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_cases())
def test_generated_specs_build_or_fail_naming_the_field(case):
    spec, d_in, d_out, bad_fields = case
    event("invalid" if bad_fields else "valid")
    if bad_fields:
        with pytest.raises((ValueError, TypeError)) as info:
            build_projection(spec, d_in, d_out)
        message = str(info.value)
        assert any(field in message for field in bad_fields), (message, bad_fields)
        return
    head = build_projection(spec, d_in, d_out).eval()
    out = head(torch.randn(2, 3, d_in))
    assert out.shape == (2, 3, d_out) and torch.isfinite(out).all()
    # The resolved spec is JSON and rebuilds the same architecture.
    again = build_projection(json.loads(json.dumps(head.spec)), d_in, d_out)
    assert [(n, p.shape) for n, p in again.state_dict().items()] == [(n, p.shape) for n, p in head.state_dict().items()]
