"""The projection head as a PEFT adapter type: get_peft_model, save_pretrained, PeftModel / AutoModel / AutoPeftModel
loading, save_projection_adapter / load_projection_adapter, save_head / load_head (old folders too), LoRA beside it,
push_to_hub (mocked), shape errors and idempotent registration."""

from __future__ import annotations

import importlib
import json
import warnings

import pytest
import torch
from peft import AutoPeftModel, LoraConfig, PeftModel, get_peft_model
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import PeftType
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer

import hf_projections
from hf_projections import (
    ColBERTModel,
    DenseEmbeddingModel,
    ProjectionAdapterConfig,
    load_projection_adapter,
    save_projection_adapter,
)
from hf_projections.integrations import peft_registry, projection_adapter
from hf_projections.integrations.peft import apply_lora
from hf_projections.modeling import load_head, save_head
from hf_projections.modeling.head_files import head_module

QUERIES = ["the cat gene", "dog"]
DOCS = ["cancer risk of the drug", "the protein cell", "a study"]
HEAD = "base_model.model.projection.hf_projection_head."
MIX = "base_model.model.layer_mix.hf_projection_layer_mix."
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "config.json"}


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's and transformers' deprecation notices
        yield


def perturb(*modules, step=0.05):
    """A trained head differs from a fresh one: shift every parameter."""
    with torch.no_grad():
        for module in modules:
            for parameter in module.parameters():
                parameter.add_(step)


def trained_model(backbone, **kwargs):
    torch.manual_seed(0)
    model = ColBERTModel.from_backbone(backbone, **{"projection": "ffn2-x2-res", "dim": 16, **kwargs})
    perturb(model.projection, *([model.layer_mix] if model.layer_mix is not None else []))
    return model.eval()


def scores(model):
    return model.score(QUERIES, DOCS)


def test_round_trip_through_automodel_peftmodel_autopeft_and_loader(tiny_backbone, tmp_path):
    model = trained_model(tiny_backbone)
    expected = scores(model)
    fresh = ColBERTModel.from_backbone(tiny_backbone, projection="ffn2-x2-res", dim=16)
    assert not torch.allclose(scores(fresh), expected, atol=1e-3)  # the comparisons below can fail
    folder = save_projection_adapter(model, tmp_path / "adapter")

    auto = AutoModel.from_pretrained(folder)
    assert type(auto) is ColBERTModel and auto.backbone.config.hidden_size == 32
    torch.testing.assert_close(scores(auto), expected, rtol=0, atol=1e-6)

    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_backbone), folder)
    assert isinstance(peft_model, PeftModel) and isinstance(peft_model.get_base_model(), ColBERTModel)
    torch.testing.assert_close(scores(peft_model), expected, rtol=0, atol=1e-6)
    queries = peft_model.encode_queries(QUERIES)
    assert [q.shape for q in queries] == [q.shape for q in model.encode_queries(QUERIES)]

    torch.testing.assert_close(scores(load_projection_adapter(folder)), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(scores(ColBERTModel.from_pretrained(folder)), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(scores(AutoPeftModel.from_pretrained(folder)), expected, rtol=0, atol=1e-6)

    merged = peft_model.merge_and_unload()  # a plain ColBERTModel again, saved whole
    assert type(merged) is ColBERTModel and type(merged.projection) is type(model.projection)
    merged.save_pretrained(tmp_path / "full")
    torch.testing.assert_close(scores(ColBERTModel.from_pretrained(tmp_path / "full")), expected, rtol=0, atol=1e-6)


def test_single_vector_model_round_trip(tiny_backbone, tmp_path):
    torch.manual_seed(0)
    model = DenseEmbeddingModel.from_backbone(tiny_backbone, projection="glu-x2-res", dim=8, pooling="cls")
    perturb(model.projection)
    expected = model.eval().encode_queries(QUERIES)
    folder = save_projection_adapter(model, tmp_path / "adapter")
    auto = AutoModel.from_pretrained(folder)
    assert type(auto) is DenseEmbeddingModel and auto.config.pooling == "cls" and auto.config.query_marker is None
    torch.testing.assert_close(auto.encode_queries(QUERIES), expected, rtol=0, atol=1e-6)
    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_backbone), folder)
    assert isinstance(peft_model.get_base_model(), DenseEmbeddingModel)
    torch.testing.assert_close(peft_model.encode_queries(QUERIES), expected, rtol=0, atol=1e-6)


def test_adapter_folder_holds_the_head_only(tiny_backbone, tmp_path):
    model = trained_model(tiny_backbone, query_max_length=24, document_marker=None)
    folder = save_projection_adapter(model, tmp_path / "adapter")
    assert {p.name for p in folder.iterdir()} == ADAPTER_FILES

    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "HF_PROJECTION" and config["base_model_name_or_path"] == tiny_backbone
    assert config["projection"] == model.config.projection and config["dim"] == 16 and config["d_in"] == 32
    assert config["query_max_length"] == 24 and config["document_marker"] is None
    model_config = json.loads((folder / "config.json").read_text())
    assert model_config["model_type"] == "hf_projections_colbert" and model_config["backbone_config"] is None
    assert model_config["backbone_name"] == tiny_backbone

    tensors = load_file(folder / "adapter_model.safetensors")
    head = model.projection.state_dict()
    assert set(tensors) == {HEAD + name for name in head}
    for name, value in head.items():
        assert torch.equal(tensors[HEAD + name], value), name
    head_bytes = sum(t.numel() * t.element_size() for t in head.values())
    backbone_bytes = sum(t.numel() * t.element_size() for t in model.backbone.state_dict().values())
    assert (folder / "adapter_model.safetensors").stat().st_size < head_bytes + 4096 < backbone_bytes
    # The settings come back with the head: the query budget and the absent document marker.
    loaded = load_projection_adapter(folder)
    assert loaded.config.query_max_length == 24 and loaded.config.document_marker is None


def test_get_peft_model_trains_only_the_head_and_saves_it(tiny_backbone, tmp_path):
    encoder = AutoModel.from_pretrained(tiny_backbone)
    config = ProjectionAdapterConfig(projection="ffn2-x2-res", dim=16, query_max_length=24)
    peft_model = get_peft_model(encoder, config)
    inner = peft_model.get_base_model()
    assert isinstance(inner, ColBERTModel) and inner.backbone is encoder  # shared, not copied
    assert config.d_in == 32
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all(".hf_projection_head.default." in n for n in trainable)
    assert not any(p.requires_grad for p in encoder.parameters())

    # Encodes like a ColBERTModel built from that encoder and that head.
    head = head_module(peft_model)
    twin = ColBERTModel.from_parts(encoder, AutoTokenizer.from_pretrained(tiny_backbone), head_state=head.state_dict(),
                                   projection="ffn2-x2-res", dim=16, query_max_length=24, query_marker=None,
                                   document_marker=None, augment_queries=False)  # the adapter's recipe defaults
    torch.testing.assert_close(scores(peft_model), scores(twin.eval()), rtol=0, atol=1e-6)

    encoder_before = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    head_before = {n: p.detach().clone() for n, p in head.named_parameters()}
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.5)
    peft_model.train()
    batch = inner.tokenize(DOCS, is_query=False)
    loss = peft_model(**batch).token_embeddings.sum(-1).pow(2).mean()
    loss.backward()
    optimizer.step()
    assert all(torch.equal(p, encoder_before[n]) for n, p in encoder.named_parameters())
    assert any(not torch.equal(p, head_before[n]) for n, p in head.named_parameters())

    peft_model.eval()
    expected = scores(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")
    assert ADAPTER_FILES <= {p.name for p in (tmp_path / "adapter").iterdir()}
    assert set(load_file(tmp_path / "adapter" / "adapter_model.safetensors")) == {HEAD + n for n in head.state_dict()}
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == tiny_backbone and saved["peft_type"] == "HF_PROJECTION"
    assert saved["auto_mapping"] == {"base_model_class": "AutoModel", "parent_library": "transformers"}
    torch.testing.assert_close(scores(AutoModel.from_pretrained(tmp_path / "adapter")), expected, rtol=0, atol=1e-6)
    restored = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_backbone), tmp_path / "adapter")
    torch.testing.assert_close(scores(restored), expected, rtol=0, atol=1e-6)
    assert not any(p.requires_grad for p in restored.parameters())  # loaded for inference
    trainable_again = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_backbone), tmp_path / "adapter",
                                                is_trainable=True)
    assert {n for n, p in trainable_again.named_parameters() if p.requires_grad} == set(trainable)


def test_misuse_is_refused_with_clear_errors(tiny_backbone, tmp_path):
    model = trained_model(tiny_backbone)
    with pytest.raises(TypeError, match="needs the encoder, got a ColBERTModel"):
        get_peft_model(model, ProjectionAdapterConfig(dim=16))
    peft_model = get_peft_model(AutoModel.from_pretrained(tiny_backbone), ProjectionAdapterConfig(dim=16))
    with pytest.raises(ValueError, match="already has a projection adapter"):
        peft_model.add_adapter("second", ProjectionAdapterConfig(dim=16))
    with pytest.raises(ValueError, match="d_in=64 .* hidden size is 32"):
        get_peft_model(AutoModel.from_pretrained(tiny_backbone), ProjectionAdapterConfig(dim=16, d_in=64))
    with pytest.raises(ValueError, match="layer_mix must be one of scalar, concat"):
        ProjectionAdapterConfig(layer_mix="sum")
    with pytest.raises(ValueError, match="unknown projection type 'no-such-head'"):
        ProjectionAdapterConfig(projection="no-such-head")
    model.save_pretrained(tmp_path / "full")
    with pytest.raises(ValueError, match="holds a full model .*model.safetensors"):
        save_projection_adapter(model, tmp_path / "full")


def test_wrong_shaped_or_missing_adapter_weight_names_the_tensor(tiny_backbone, tmp_path):
    folder = save_projection_adapter(trained_model(tiny_backbone), tmp_path / "adapter")
    weights = folder / "adapter_model.safetensors"
    tensors = load_file(weights)
    name = HEAD + "layers.0.weight"
    assert tensors[name].shape == (64, 32)
    save_file({**tensors, name: tensors[name][:63].contiguous()}, weights)
    message = r"hf_projection_head.layers.0.weight: saved \(63, 32\) but the config builds \(64, 32\)"
    with pytest.raises(ValueError, match=message):
        load_projection_adapter(folder)
    with pytest.raises(ValueError, match=message):
        AutoModel.from_pretrained(folder)
    with pytest.raises(ValueError, match=message):
        PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_backbone), folder)
    with pytest.raises(ValueError, match=message):
        load_head(ColBERTModel.from_backbone(tiny_backbone, dim=16), folder)

    save_file({k: v for k, v in tensors.items() if k != name}, weights)
    with pytest.raises(ValueError, match=r"missing base_model.model.projection.hf_projection_head.layers.0.weight"):
        PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_backbone), folder)
    weights.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="adapter_model.safetensors: not a readable safetensors file"):
        load_projection_adapter(folder)


@pytest.mark.parametrize("mix", ["scalar", "concat"])
def test_layer_mix_head_round_trip(tiny_backbone, tmp_path, mix):
    model = trained_model(tiny_backbone, dim=8, projection_layers=[-1, 0], layer_mix=mix)
    expected = scores(model)
    folder = save_head(model, tmp_path / "adapter")  # save_head writes the adapter now, layer mix included
    tensors = load_file(folder / "adapter_model.safetensors")
    assert ({k for k in tensors if k.startswith(MIX)} == {MIX + "weights", MIX + "gamma"}) == (mix == "scalar")
    assert json.loads((folder / "adapter_config.json").read_text())["projection_layers"] == [-1, 0]

    torch.testing.assert_close(scores(AutoModel.from_pretrained(folder)), expected, rtol=0, atol=1e-6)
    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_backbone), folder)
    torch.testing.assert_close(scores(peft_model), expected, rtol=0, atol=1e-6)
    other = ColBERTModel.from_backbone(tiny_backbone, projection="linear", dim=4)  # no layer mix, another head
    load_head(other, folder)
    assert other.config.projection_layers == [-1, 0] and other.config.layer_mix == mix
    torch.testing.assert_close(scores(other.eval()), expected, rtol=0, atol=1e-6)

    trainable = {n for n, p in get_peft_model(AutoModel.from_pretrained(tiny_backbone), ProjectionAdapterConfig(
        dim=8, projection_layers=[-1, 0], layer_mix=mix)).named_parameters() if p.requires_grad}
    assert any("hf_projection_layer_mix.default" in n for n in trainable) == (mix == "scalar")


def test_old_save_head_folder_still_loads(tiny_backbone, tmp_path):
    model = trained_model(tiny_backbone)
    folder = tmp_path / "old-head"  # what save_head wrote before the adapter format
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.projection.state_dict().items()}, folder / "projection.safetensors")
    (folder / "projection_config.json").write_text(json.dumps({
        "format": "hf-projections-head", "version": 1, "projection": model.config.projection, "d_in": 32, "dim": 16,
        "matryoshka_dims": None, "model_type": "hf_projections_colbert", "pooling": "mean",
        "backbone_name": tiny_backbone,
    }))
    other = ColBERTModel.from_backbone(tiny_backbone, projection="linear", dim=8)
    assert not torch.allclose(scores(other), scores(model), atol=1e-3)
    load_head(other, folder)
    torch.testing.assert_close(scores(other.eval()), scores(model), rtol=0, atol=1e-6)
    # Saved again, it is an adapter.
    save_head(other, tmp_path / "new-head")
    assert ADAPTER_FILES == {p.name for p in (tmp_path / "new-head").iterdir()}
    torch.testing.assert_close(scores(load_projection_adapter(tmp_path / "new-head")), scores(model), rtol=0, atol=1e-6)


def test_lora_adapter_and_projection_adapter_from_one_trained_model(tiny_backbone, tmp_path):
    """apply_lora's LoRA (head in modules_to_save) + the head saved as a projection adapter: loaded together."""
    torch.manual_seed(0)
    peft_model = apply_lora(ColBERTModel.from_backbone(tiny_backbone, dim=16), r=4, init_lora_weights=False)
    perturb(head_module(peft_model))
    expected = scores(peft_model.eval())
    save_projection_adapter(peft_model, tmp_path / "head")
    peft_model.save_pretrained(tmp_path / "lora")
    head_only = load_projection_adapter(tmp_path / "head")
    assert not torch.allclose(scores(head_only), expected, atol=1e-3)  # the LoRA matters
    together = PeftModel.from_pretrained(head_only, tmp_path / "lora")
    torch.testing.assert_close(scores(together), expected, rtol=0, atol=1e-6)


def test_projection_adapter_over_a_lora_encoder(tiny_backbone, tmp_path):
    """LoRA on the encoder (its own PeftModel) and a projection adapter on top: both train, each saves its own."""
    torch.manual_seed(0)
    lora_config = LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False)
    lora_encoder = get_peft_model(AutoModel.from_pretrained(tiny_backbone), lora_config)
    model = get_peft_model(lora_encoder, ProjectionAdapterConfig(dim=16))
    assert type(lora_encoder.peft_config["default"]) is LoraConfig  # the LoRA keeps its config
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable) and any("hf_projection_head" in n for n in trainable)
    assert all("lora_" in n or "hf_projection_head" in n for n in trainable)
    perturb(head_module(model))
    expected = scores(model.eval())
    model.save_pretrained(tmp_path / "head")
    lora_encoder.save_pretrained(tmp_path / "lora")
    assert all(k.startswith(HEAD) for k in load_file(tmp_path / "head" / "adapter_model.safetensors"))
    assert all("lora_" in k for k in load_file(tmp_path / "lora" / "adapter_model.safetensors"))

    encoder = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_backbone), tmp_path / "lora")
    torch.testing.assert_close(scores(PeftModel.from_pretrained(encoder, tmp_path / "head")), expected, rtol=0, atol=1e-6)
    encoder = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_backbone), tmp_path / "lora")
    torch.testing.assert_close(scores(load_projection_adapter(tmp_path / "head", encoder=encoder)), expected,
                               rtol=0, atol=1e-6)
    assert not torch.allclose(scores(load_projection_adapter(tmp_path / "head")), expected, atol=1e-3)


def test_push_to_hub_uploads_exactly_the_adapter_files(tiny_backbone, monkeypatch):
    from huggingface_hub import HfApi, ModelCard, ModelCardData
    from transformers.utils import hub

    uploads = {}

    def create_repo(self, repo_id, **kwargs):
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def create_commit(self, repo_id, operations, **kwargs):
        uploads.update({op.path_in_repo: open(op.path_or_fileobj, "rb").read() for op in operations})
        uploads["repo_id"] = repo_id

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setattr(hub, "create_and_tag_model_card",
                        lambda repo_id, tags=None, token=None: ModelCard.from_template(ModelCardData()))
    peft_model = get_peft_model(AutoModel.from_pretrained(tiny_backbone), ProjectionAdapterConfig(dim=16))
    peft_model.push_to_hub("someone/colbert-head")
    assert uploads.pop("repo_id") == "someone/colbert-head"
    assert set(uploads) == ADAPTER_FILES | {"README.md"}
    assert json.loads(uploads["adapter_config.json"])["peft_type"] == "HF_PROJECTION"
    assert json.loads(uploads["config.json"])["model_type"] == "hf_projections_colbert"
    from safetensors.torch import load as load_bytes

    assert set(load_bytes(uploads["adapter_model.safetensors"])) == {HEAD + n for n in head_module(peft_model).state_dict()}


def test_registration_is_idempotent(tiny_backbone):
    members = len(PeftType)
    assert peft_registry.add_peft_type("HF_PROJECTION") is PeftType.HF_PROJECTION is PeftType("HF_PROJECTION")
    assert len(PeftType) == members and PeftType["HF_PROJECTION"] in list(PeftType)
    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.HF_PROJECTION] is ProjectionAdapterConfig
    saved = dict(vars(projection_adapter))
    try:
        importlib.reload(projection_adapter)  # the module runs (and registers) a second time
        assert len(PeftType) == members
        assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.HF_PROJECTION] is projection_adapter.ProjectionAdapterConfig
        assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.HF_PROJECTION] is projection_adapter.ProjectionAdapterModel
        peft_model = get_peft_model(AutoModel.from_pretrained(tiny_backbone),
                                    projection_adapter.ProjectionAdapterConfig(dim=16))
        assert scores(peft_model).shape == (2, 3)
        other = type("ProjectionAdapterConfig", (ProjectionAdapterConfig,), {"__module__": "elsewhere"})
        with pytest.raises(KeyError, match="already registered with hf_projections"):
            peft_registry.register_tuner("hf_projection", other, projection_adapter.ProjectionAdapterModel,
                                         "hf_projection_")
        with pytest.raises(ValueError, match="upper-case identifier"):
            peft_registry.add_peft_type("lower")
    finally:
        vars(projection_adapter).update(saved)
        peft_registry.register_tuner("hf_projection", saved["ProjectionAdapterConfig"], saved["ProjectionAdapterModel"],
                                     "hf_projection_")
    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.HF_PROJECTION] is hf_projections.ProjectionAdapterConfig


def test_adapter_defaults_are_the_measured_head_recipe():
    from hf_projections.heads import resolve_spec
    from hf_projections.training import recipe_for

    recipe, config = recipe_for("head"), ProjectionAdapterConfig()
    assert resolve_spec(config.projection) == resolve_spec(recipe.projection)
    assert recipe.markers is False and config.query_marker is None and config.document_marker is None
    assert config.augment_queries is recipe.augment_queries
