"""Property tests for config validation: generated configs, valid or broken in exactly one place.

Two families: the model configs (``ProjectionConfig`` / ``DenseProjectionConfig``) and the sweep budget
(``SweepSettings``). Every valid case must build (and a model config must round-trip every field through
``to_dict`` / JSON / a saved folder); every broken one must raise ``ValueError`` (or ``TypeError``) whose message
names the broken field. Validity is decided by oracles written from the documented rules (docstrings of the two
config classes and of ``SweepSettings``), independently of the implementation:

- counts (dims, lengths, steps, ...) are ints >= 1; ``True``/``False`` are not counts, floats and strings are not ints;
- markers are non-empty strings or ``None``; flags are real bools; pooling is ``mean`` or ``cls``;
- config ``matryoshka_dims``: a non-empty list of positive ints <= ``dim``, stored sorted with repeats dropped;
  sweep ``matryoshka_dims``: strictly ascending (unsorted or repeated lists are rejected there);
- ``starbucks_pairs`` (single-vector configs only): a non-empty list of ``(layer, dim)`` pairs of positive ints,
  ``layer <= num_layers`` (when the backbone is known), ``dim <=`` the model's dim, layers and dims never
  decrease, no repeated pair; stored as lists with the full model ``[num_layers, dim]`` appended when missing.
"""

import json
import math
import re
import tempfile

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from transformers import AutoConfig

from hf_projections.modeling.configuration_hf_projections import DenseProjectionConfig, ProjectionConfig
from hf_projections.sweep.settings import SweepSettings

BACKBONE = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 37, "vocab_size": 100}
NUM_LAYERS = BACKBONE["num_hidden_layers"]

# Values that a documented count (int >= 1) must refuse: zero, negatives, bools, floats, strings, None, lists.
BAD_COUNTS = st.one_of(
    st.integers(-1000, 0), st.sampled_from([True, False, 1.0, 8.0, 2.5, float("nan"), "8", "", None, [8], (8,)])
)
BAD_BOOLS = st.sampled_from([0, 1, 1.0, "true", "False", "", None, [True]])
BAD_NUMBERS = st.one_of(  # for finite numbers > 0 (learning rates, temperature)
    st.floats(-10.0, 0.0), st.integers(-10, 0),
    st.sampled_from([True, False, float("nan"), float("inf"), float("-inf"), "0.1", "1e-3", None, [0.1]]),
)
TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzQD[]#_0123456789", min_size=1, max_size=12)


def names_field(message: str, fields) -> bool:
    """True when ``message`` names one of ``fields`` as a word (``dim`` does not match inside ``matryoshka_dims``;
    an index such as ``matryoshka_dims[2]`` still counts)."""
    return any(re.search(rf"(?<![\w.]){re.escape(field)}(?!\w)", message) for field in fields)


def check_case(build, bad_fields):
    """Build a case and return the result (valid) or assert a ValueError/TypeError naming a bad field (invalid)."""
    event("invalid" if bad_fields else "valid")
    if not bad_fields:
        return build()
    with pytest.raises((ValueError, TypeError)) as info:
        build()
    assert names_field(str(info.value), bad_fields), (str(info.value), bad_fields)
    return None


# ----------------------------------------------------------------------------------------------- model configs

def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def config_matryoshka_ok(dims, dim) -> bool:
    """Documented rule of the model configs: None, or a non-empty list of positive ints, each <= dim."""
    if dims is None:
        return True
    return isinstance(dims, (list, tuple)) and len(dims) > 0 and all(_is_count(d) and d <= dim for d in dims)


def starbucks_ok(pairs, dim, num_layers) -> bool:
    """Documented rule of ``DenseProjectionConfig.starbucks_pairs`` (None is always fine)."""
    if pairs is None:
        return True
    if not isinstance(pairs, (list, tuple)) or not pairs:
        return False
    previous = None
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(_is_count(v) for v in pair):
            return False
        layer, pair_dim = pair
        if (num_layers is not None and layer > num_layers) or pair_dim > dim:
            return False
        if previous is not None and (layer < previous[0] or pair_dim < previous[1] or (layer, pair_dim) == previous):
            return False
        previous = (layer, pair_dim)
    return True


def expected_starbucks(pairs, dim, num_layers):
    if pairs is None:
        return None
    stored = [list(p) for p in pairs]
    if num_layers is not None and stored[-1] != [num_layers, dim]:
        stored.append([num_layers, dim])
    return stored


@st.composite
def starbucks_chains(draw, dim, num_layers):
    """A valid small-to-large chain of (layer, dim) pairs, as lists or tuples."""
    top_layer = num_layers or 6
    layer, pair_dim = draw(st.integers(1, top_layer)), draw(st.integers(1, dim))
    chain = [(layer, pair_dim)]
    for _ in range(draw(st.integers(0, 3))):
        step_layer = draw(st.integers(0, top_layer - layer))
        step_dim = draw(st.integers(0 if step_layer else 1, dim - pair_dim)) if (step_layer or pair_dim < dim) else 0
        if not step_layer and not step_dim:
            break
        layer, pair_dim = layer + step_layer, pair_dim + step_dim
        chain.append((layer, pair_dim))
    as_list = draw(st.booleans())
    return [list(p) if as_list else p for p in chain]


@st.composite
def starbucks_candidates(draw, dim, num_layers):
    """Anything from a valid chain to one broken in one place (the oracle decides which)."""
    chain = draw(starbucks_chains(dim, num_layers))
    how = draw(st.sampled_from(["value", "shape", "order", "repeat", "container", "layer", "dim"]))
    index = draw(st.integers(0, len(chain) - 1))
    pairs = [list(p) for p in chain]
    if how == "value":
        pairs[index][draw(st.integers(0, 1))] = draw(st.sampled_from([0, -1, -5, True, False, 1.0, "1", None]))
    elif how == "shape":
        pairs[index] = draw(st.sampled_from([[1], [1, 1, 1], [], "12", None, 3, {1: 2}]))
    elif how == "order" and len(pairs) > 1:
        pairs = pairs[::-1]
    elif how == "repeat":
        pairs.insert(index, list(pairs[index]))
    elif how == "container":
        return draw(st.sampled_from([[], (), "1,8", 4, {"layer": 1}, b"\x01\x08"]))
    elif how == "layer":
        pairs[-1][0] = (num_layers or 6) + draw(st.integers(1, 4))
    else:
        pairs[-1][1] = dim + draw(st.integers(1, 8))
    return pairs


def config_matryoshka_candidates(dim):
    valid = st.lists(st.integers(1, dim), min_size=1, max_size=5)  # any order, repeats allowed: normalised
    broken = st.one_of(
        st.just([]), st.just(()), st.integers(1, dim), st.just(str(dim)), st.just({dim: 1}),
        valid.map(lambda dims: [*dims, dim + 1]),
        st.tuples(valid, st.sampled_from([0, -3, True, False, 2.0, "4", None])).map(lambda t: [*t[0], t[1]]),
    )
    return st.one_of(valid, broken)


PROJECTIONS_VALID = st.sampled_from(
    ["linear", "ffn2-x2-res", "glu-x2", "phm4", {"type": "ffn", "depth": 3, "expansion": 1.5}, {"type": "linear"},
     {"type": "ffn2", "residual": False}]
)
PROJECTIONS_BROKEN = st.sampled_from(
    ["no-such-head", "", {"type": "ffn", "depth": 0}, {"type": "ffn", "depht": 2}, {"depth": 2}, 3, None, ["linear"],
     {"type": "glu", "variant": "relu-glu"}]
)


@st.composite
def model_config_cases(draw):
    """(class, kwargs, expected stored fields or None, bad field names; empty = valid)."""
    cls = draw(st.sampled_from([ProjectionConfig, DenseProjectionConfig]))
    dense = cls is DenseProjectionConfig
    backbone = draw(st.sampled_from([BACKBONE, BACKBONE, BACKBONE, None]))
    num_layers = NUM_LAYERS if backbone is not None else None
    kwargs = {"backbone_config": backbone}
    expected = {
        "dim": 128, "pooling": "mean", "query_max_length": 32, "document_max_length": 180,
        "query_marker": None if dense else "[unused0]", "document_marker": None if dense else "[unused1]",
        "augment_queries": not dense, "matryoshka_dims": None,
    }
    valid = {
        "dim": st.integers(1, 256),
        "pooling": st.sampled_from(["mean", "cls"]),
        "query_max_length": st.integers(1, 4096),
        "document_max_length": st.integers(1, 8192),
        "query_marker": st.one_of(st.none(), TOKEN, st.just("[unused0]")),
        "document_marker": st.one_of(st.none(), TOKEN, st.just("[unused1]")),
        "augment_queries": st.booleans(),
    }
    for name in sorted(valid):
        if draw(st.booleans()):
            kwargs[name] = expected[name] = draw(valid[name])
    dim = expected["dim"]
    if draw(st.booleans()):
        kwargs["projection"] = draw(PROJECTIONS_VALID)
    if draw(st.booleans()):
        kwargs["matryoshka_dims"] = draw(st.lists(st.integers(1, dim), min_size=1, max_size=5))
    if dense and draw(st.booleans()):
        kwargs["starbucks_pairs"] = draw(starbucks_chains(dim, num_layers))

    bad = set()
    mutation = draw(st.sampled_from(["none", "none", "scalar", "scalar", "matryoshka", "starbucks", "projection"]))
    if mutation == "scalar":
        name = draw(st.sampled_from(sorted(valid)))
        if name in ("dim",):  # nothing else may depend on a broken dim
            kwargs.pop("matryoshka_dims", None)
            kwargs.pop("starbucks_pairs", None)
        if name in ("dim", "query_max_length", "document_max_length"):
            kwargs[name] = draw(BAD_COUNTS)
        elif name == "augment_queries":
            kwargs[name] = draw(BAD_BOOLS)
        elif name == "pooling":
            kwargs[name] = draw(st.sampled_from(["max", "MEAN", "cls ", "", "none", None, 0, True, ["mean"]]))
        else:  # a marker: None is allowed, an empty string or a non-string is not
            kwargs[name] = draw(st.sampled_from(["", 0, 1, True, b"[Q]", ["[Q]"], 1.5]))
        bad = {name}
    elif mutation == "matryoshka":
        kwargs["matryoshka_dims"] = draw(config_matryoshka_candidates(dim))
        bad = set() if config_matryoshka_ok(kwargs["matryoshka_dims"], dim) else {"matryoshka_dims"}
    elif mutation == "starbucks":
        kwargs["starbucks_pairs"] = draw(st.one_of(starbucks_candidates(dim, num_layers), starbucks_chains(dim, num_layers)))
        if not dense or not starbucks_ok(kwargs["starbucks_pairs"], dim, num_layers):
            bad = {"starbucks_pairs"}  # ColBERT configs take no Starbucks pairs at all
    elif mutation == "projection":
        kwargs["projection"] = draw(PROJECTIONS_BROKEN)
        bad = {"projection"}
    if not bad:
        if kwargs.get("matryoshka_dims") is not None:
            expected["matryoshka_dims"] = sorted(set(kwargs["matryoshka_dims"]))
        if dense:
            expected["starbucks_pairs"] = expected_starbucks(kwargs.get("starbucks_pairs"), dim, num_layers)
    return cls, kwargs, expected, bad


def _fields(config) -> dict:
    names = ["dim", "pooling", "query_max_length", "document_max_length", "query_marker", "document_marker",
             "augment_queries", "matryoshka_dims", "projection", "backbone_name"]
    if isinstance(config, DenseProjectionConfig):
        names.append("starbucks_pairs")
    out = {name: getattr(config, name) for name in names}
    out["backbone_config"] = None if config.backbone_config is None else config.backbone_config.to_dict()
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_config_cases(), st.integers(0, 19))
def test_generated_model_configs_build_or_fail_naming_the_field(case, save_roll):
    cls, kwargs, expected, bad = case
    event(cls.__name__)
    config = check_case(lambda: cls(**kwargs), bad)
    if config is None:
        return
    for name, value in expected.items():
        assert getattr(config, name) == value, (name, getattr(config, name), value)
    assert isinstance(config.projection, dict) and isinstance(config.projection["type"], str)
    json.dumps(config.projection)
    if kwargs["backbone_config"] is not None:
        assert config.hidden_size == BACKBONE["hidden_size"] and config.num_layers == NUM_LAYERS
    # Every field survives to_dict -> from_dict and the JSON string; a few cases also go through a saved folder.
    fields = _fields(config)
    assert _fields(cls.from_dict(config.to_dict())) == fields
    assert _fields(cls.from_dict(json.loads(config.to_json_string()))) == fields
    if save_roll == 0:
        event("saved folder")
        with tempfile.TemporaryDirectory() as folder:
            config.save_pretrained(folder)
            loaded = AutoConfig.from_pretrained(folder)
        assert type(loaded) is cls and _fields(loaded) == fields


# ----------------------------------------------------------------------------------------------- sweep settings

PRESET_NAMES = ["ffn2", "ffn2-x2", "ffn2-x2-res", "glu-x2", "swiglu-x2-res", '{"type": "ffn", "depth": 3}']


def _positive_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0)


def sweep_matryoshka_bad(dims, weights, dim) -> set:
    """Documented rules of ``SweepSettings.matryoshka_dims`` / ``matryoshka_weights`` -> the broken fields."""
    if dims is not None:
        if not isinstance(dims, (list, tuple)) or not dims or not all(_is_count(d) for d in dims):
            return {"matryoshka_dims"}
        if list(dims) != sorted(set(dims)) or dims[-1] > dim:
            return {"matryoshka_dims"}
    if weights is None:
        return set()
    if dims is None:
        return {"matryoshka_weights"}
    trained = set(dims) | {dim}
    if not isinstance(weights, (list, tuple)) or len(weights) != len(trained):
        return {"matryoshka_weights"}
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
               for w in weights):
        return {"matryoshka_weights"}
    return set()


@st.composite
def sweep_matryoshka(draw, dim):
    """(dims, weights): valid, or broken in one of the two."""
    dims = draw(st.none() | st.lists(st.integers(1, dim), min_size=1, max_size=5, unique=True).map(sorted).map(tuple))
    weights = None
    if dims is not None and draw(st.booleans()):
        count = len(set(dims) | {dim})
        weights = tuple(draw(st.lists(st.floats(0.0, 5.0) | st.integers(0, 3), min_size=count, max_size=count)))
    how = draw(st.sampled_from(["none"] * 4 + ["dims", "weights"]))
    if how == "dims":
        ok = list(dims or (max(1, dim // 2),))
        dims = draw(st.sampled_from([
            [], (), dim, str(dim), [*ok, dim + 1], [*ok, ok[-1]], [*ok[::-1], 0] if len(ok) == 1 else ok[::-1],
            [0, *ok], [True], [*ok[:-1], float(ok[-1])], [-4], [str(ok[0])], [None],
        ]))
        weights = None
    elif how == "weights":
        count = len(set(dims or ()) | {dim})
        base = [1.0] * count
        index = draw(st.integers(0, count - 1))
        broken = draw(st.sampled_from(["short", "long", "value", "scalar", "no dims"]))
        if broken == "short":
            weights = base[:-1]
        elif broken == "long":
            weights = [*base, 1.0]
        elif broken == "value":
            base[index] = draw(st.sampled_from([-1.0, -0.001, float("nan"), float("inf"), True, "1", None]))
            weights = base
        elif broken == "scalar":
            weights = 1.0
        else:
            dims, weights = None, (1.0,)
    return dims, weights


@st.composite
def sweep_cases(draw):
    """(kwargs, bad field names; empty = valid)."""
    kwargs = {}
    valid = {
        "steps": st.integers(1, 10_000),
        "batch_size": st.integers(1, 512),
        "dim": st.integers(1, 512),
        "query_max_length": st.integers(1, 512),
        "document_max_length": st.integers(1, 4096),
        "head_lr": st.none() | st.floats(1e-7, 1.0) | st.integers(1, 3),
        "temperature": st.none() | st.floats(1e-3, 10.0) | st.just(1),
        "backbone_lr": st.none() | st.floats(1e-8, 1e-2),
        "mode": st.sampled_from(["head", "top-1", "top-3"]),
        "validation_queries": st.integers(0, 200),
        "branch_init": st.sampled_from(["random", "zero"]),
        "markers": st.none() | st.booleans(),
        "augment_queries": st.none() | st.booleans(),
        "max_eval_queries": st.none() | st.integers(1, 5000),
        "train_threads": st.none() | st.integers(1, 16),
        "heads": st.lists(st.sampled_from(PRESET_NAMES), unique=True, max_size=4).flatmap(
            lambda others: st.permutations(["linear", *others])).map(tuple),
        "seeds": st.lists(st.integers(0, 1000), min_size=1, max_size=4, unique=True).map(tuple),
    }
    for name in sorted(valid):
        if draw(st.booleans()):
            kwargs[name] = draw(valid[name])
    if kwargs.get("backbone_lr") is not None and kwargs.get("mode", "head") == "head":
        kwargs["mode"] = "top-2"  # head mode trains no backbone layer: a backbone_lr there is an error (tested below)
    if draw(st.integers(0, 4)) == 0:
        kwargs["eval_data"] = ()
        kwargs["validation_queries"] = draw(st.integers(1, 50))
    dim = kwargs.get("dim", 128)
    dims, weights = draw(sweep_matryoshka(dim))
    if dims is not None:
        kwargs["matryoshka_dims"] = dims
    if weights is not None:
        kwargs["matryoshka_weights"] = weights
    bad = sweep_matryoshka_bad(dims, weights, dim)
    if bad or draw(st.sampled_from([True, False, False])):
        return kwargs, bad  # valid, or broken in the matryoshka fields only

    name = draw(st.sampled_from([*sorted(valid), "nothing to evaluate"]))
    if name == "dim":
        kwargs.pop("matryoshka_dims", None)
        kwargs.pop("matryoshka_weights", None)
    if name in ("steps", "batch_size", "dim", "query_max_length", "document_max_length"):
        kwargs[name] = draw(BAD_COUNTS)
    elif name in ("max_eval_queries", "train_threads"):  # None is allowed here, nothing else that is not a count
        kwargs[name] = draw(BAD_COUNTS.filter(lambda v: v is not None))
    elif name in ("head_lr", "temperature", "backbone_lr"):  # None is allowed (the recipe's)
        kwargs[name] = draw(BAD_NUMBERS.filter(lambda v: v is not None))
        if name == "backbone_lr" and kwargs.get("mode", "head") == "head":
            kwargs["mode"] = "top-2"
    elif name == "mode":
        kwargs[name] = draw(st.sampled_from(["full", "top-0", "bottom-2", "", None, 2]))
        kwargs.pop("backbone_lr", None)
    elif name == "validation_queries":
        kwargs.pop("eval_data", None)
        kwargs[name] = draw(st.integers(-100, -1) | st.sampled_from([True, False, 1.5, "3", None, [3]]))
    elif name == "branch_init":
        kwargs[name] = draw(st.sampled_from(["ones", "Random", "zeros", "", None, 0, True]))
    elif name in ("markers", "augment_queries"):  # None is allowed (the recipe's)
        kwargs[name] = draw(BAD_BOOLS.filter(lambda v: v is not None))
    elif name == "heads":
        ok = list(kwargs.get("heads", ("linear", "ffn2-x2-res")))
        kwargs[name] = draw(st.sampled_from([
            tuple(h for h in ok if h != "linear"), (*ok, ok[0]), (), "linear", None, (*ok, 1), (*ok, ""),
            (*ok, None), ("Linear", *[h for h in ok if h != "linear"]),
        ]))
    elif name == "seeds":
        ok = list(kwargs.get("seeds", (0, 1)))
        kwargs[name] = draw(st.sampled_from([(*ok, ok[0]), (), (*ok, -1), (*ok, True), (*ok, 0.5), "0", None, 3]))
    else:  # no test set and no validation set: nothing to evaluate
        kwargs["eval_data"], kwargs["validation_queries"] = (), 0
        return kwargs, {"eval_data", "validation_queries"}
    return kwargs, {name}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sweep_cases())
def test_generated_sweep_settings_build_or_fail_naming_the_field(case):
    kwargs, bad = case
    built = check_case(lambda: SweepSettings(**kwargs), bad)
    if built is None:
        return
    for name, value in kwargs.items():
        assert getattr(built, name) == value, (name, getattr(built, name), value)
    assert built.trained_dims() == tuple(sorted(set(kwargs.get("matryoshka_dims") or ()) | {built.dim}))
    # The settings survive the JSON that a sweep folder keeps (lists come back as tuples through replace()).
    assert SweepSettings.from_dict(json.loads(json.dumps(built.to_dict()))) == built
    resolved = built.resolved()
    assert all(getattr(resolved, name) is not None for name in ("head_lr", "temperature", "markers", "augment_queries"))
    assert (resolved.backbone_lr is None) == (built.mode == "head")


@pytest.mark.parametrize(("changes", "field"), [({"query_max_length": 3}, "query_max_length"),
                                                ({"document_max_length": 2, "document_marker": None}, "document_max_length")])
def test_length_budgets_too_short_for_the_tokenizer_are_rejected(tiny_backbone, changes, field):
    # BERT adds [CLS] and [SEP]: with the marker a budget needs >= 4 tokens (3 without) to hold any text; below
    # that the tokenizer cannot truncate and used to return texts longer than the budget.
    from hf_projections.modeling import ColBERTModel

    with pytest.raises(ValueError, match=rf"{field}=\d+ is too short for this tokenizer: it must be >= "):
        ColBERTModel.from_backbone(tiny_backbone, dim=8, **changes)
    ColBERTModel.from_backbone(tiny_backbone, dim=8, query_max_length=4, document_max_length=3, document_marker=None)
