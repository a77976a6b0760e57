"""Run a sweep: one backbone pass into a feature cache, then every head x seed trained and evaluated from it.

Each finished run appends one line to ``runs.jsonl``; an interrupted sweep started again with the same
output folder and settings skips the runs already there.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hf_projections.data import holdout_split, load_beir, pairs_to_beir, read_training_mix
from hf_projections.evaluation import evaluate_embeddings, machine_info
from hf_projections.heads import build_projection, describe, init_from_linear, resolve_spec
from hf_projections.heads.base import ResidualHead
from hf_projections.atomic import atomic_write_json
from hf_projections.modeling import ColBERTModel, load_head, save_head
from hf_projections.sweep.cards import write_head_cards
from hf_projections.sweep.report import write_report, write_run_card
from hf_projections.sweep.settings import NOT_BUDGET_FIELDS, SweepSettings
from hf_projections.training.api import build_model
from hf_projections.training.batching import passage_keys, row_sources
from hf_projections.training.cache import build_feature_cache
from hf_projections.training.cached_encoding import encode_from_cache
from hf_projections.training.cached_training import CachedPairs, cache_layer_for_mode, train_from_cache
from hf_projections.training.losses import truncate_embeddings
from hf_projections.training.nested_losses import loss_for_training


@dataclass
class EvalSet:
    """A BEIR test set, its ids and texts in a fixed order."""

    dataset: object
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]

    @classmethod
    def load(cls, name: str, max_queries: int | None = None) -> EvalSet:
        """The test split; with ``max_queries``, a seeded sample of its queries (the corpus stays whole)."""
        return cls.from_dataset(load_beir(name, split="test"), max_queries)

    @classmethod
    def from_dataset(cls, dataset, max_queries: int | None = None) -> EvalSet:
        query_ids = list(dataset.queries)
        if max_queries is not None and len(query_ids) > max_queries:
            query_ids = sorted(random.Random(0).sample(query_ids, max_queries), key=query_ids.index)
        return cls(dataset, list(dataset.corpus), list(dataset.corpus.values()),
                   query_ids, [dataset.queries[q] for q in query_ids])


def load_pairs(settings: SweepSettings):
    """The training pairs and, with ``settings.validation_queries``, a held-out validation set.

    Returns ``(train_pairs, validation)``: ``validation`` is ``None`` or ``{name: EvalSet}`` whose queries are
    the held-out training queries (none of them is trained on) and whose corpus is every passage of the pairs.
    """
    pairs = read_training_mix(settings.train_sets(), max_pairs=settings.max_pairs, seed=0)
    if not settings.validation_queries:
        return pairs, None  # plain columns: a sweep without held-out queries needs no ``datasets``
    import datasets

    pairs = datasets.Dataset.from_dict(pairs)
    n_queries = len(set(pairs["query_id"]))
    if settings.validation_queries >= n_queries:
        raise ValueError(
            f"validation_queries={settings.validation_queries} must be smaller than the {n_queries} distinct "
            f"training queries of {settings.train_label()!r}"
        )
    train, held_out = holdout_split(pairs, fraction=settings.validation_queries / n_queries, seed=0)
    name = f"{'+'.join(settings.train_sets())}-val"
    corpus = dict(zip(pairs["positive_id"], pairs["positive"]))
    return train, {name: EvalSet.from_dataset(pairs_to_beir(held_out, corpus=corpus, name=name, split="validation"))}


def run_key(head: str, seed: int) -> str:
    return f"{head}/seed{seed}"


def read_finished_runs(path: Path) -> dict[str, dict]:
    """Runs already in ``runs.jsonl``, by key; a torn last line (killed mid-write) is ignored."""
    finished = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            finished[record["key"]] = record
    return finished


def _check_resumable(output: Path, settings: SweepSettings) -> None:
    """Refuse to add runs to a folder that holds a sweep with another budget (``settings`` is resolved)."""
    saved = output / "settings.json"
    if saved.exists():
        previous = SweepSettings.from_dict(json.loads(saved.read_text(encoding="utf-8"))).resolved().to_dict()
        # Heads and seeds may grow between sessions; thread counts and the device do not change the recipe.
        budget = {k: v for k, v in settings.to_dict().items() if k not in NOT_BUDGET_FIELDS}
        old_budget = {k: (tuple(v) if isinstance(v, list) else v) for k, v in previous.items() if k in budget}
        if old_budget != budget:
            changed = sorted(k for k in budget if old_budget.get(k) != budget[k])
            raise ValueError(
                f"{output} holds a sweep with another budget (changed: {', '.join(changed)}); "
                "use a new --output folder so runs stay comparable"
            )


def cache_features(model, pairs, eval_sets: dict[str, EvalSet], mode: str, cache_dir: Path, precision: str = "fp32"):
    """One backbone pass over every text the sweep needs: two caches (queries, documents) shared by training
    and evaluation, so a training passage that is also an evaluation document is encoded once.

    Returns ``(train_data, query_cache, doc_cache)``; ``top-K`` modes cache the input of the last K layers.
    ``precision`` is the backbone pass's (``fp32`` or ``bf16``, see ``training.backbone_precision``).
    Each cache holds the sorted *set* of its texts, so sweeps whose texts differ only in order or repeats (other
    training samples over the same corpus, say) share one cache instead of encoding the corpus again.
    """
    train_queries, positives = list(pairs["query"]), list(pairs["positive"])
    queries = sorted({*train_queries, *(t for s in eval_sets.values() for t in s.query_texts)})
    documents = sorted({*positives, *(t for s in eval_sets.values() for t in s.doc_texts)})
    options = {"cache_dir": cache_dir, "layer": cache_layer_for_mode(model, mode), "precision": precision}
    query_cache = build_feature_cache(model, queries, is_query=True, **options)
    doc_cache = build_feature_cache(model, documents, is_query=False, **options)
    train_data = CachedPairs(
        query_cache,
        doc_cache,
        torch.tensor(query_cache.rows_of(train_queries)),
        torch.tensor(doc_cache.rows_of(positives)).view(-1, 1),
        passages=passage_keys(pairs),
        sources=row_sources(pairs),
    )
    return train_data, query_cache, doc_cache


def _evaluate_from_cache(model, eval_set: EvalSet, query_cache, doc_cache, dims: tuple[int, ...] = (), device=None,
                         precision: str = "fp32") -> dict:
    """Metrics at the full dim; with ``dims``, ``{dim: result}`` for each of them (the full dim included).

    ``precision`` is the encoding's autocast (the sweep's training precision: a bf16-trained top-K run is scored
    with bf16 layers too).

    Encodes once at the full dim; a smaller dim keeps the first ``d`` features of each (token) embedding and
    re-normalises, which is exactly what ``truncate_dim`` computes.
    """
    started = time.perf_counter()
    documents = encode_from_cache(model, doc_cache, texts=eval_set.doc_texts, precision=precision)
    queries = encode_from_cache(model, query_cache, texts=eval_set.query_texts, precision=precision)
    full_dim = model.config.dim
    results = {}
    for dim in sorted(dims or (full_dim,), key=lambda d: d != full_dim):  # the full dim first: it paid the encoding
        if dim != full_dim:
            started = time.perf_counter()
            queries_d = [truncate_embeddings(e, dim) for e in queries]
            documents_d = [truncate_embeddings(e, dim) for e in documents]
        else:
            queries_d, documents_d = queries, documents
        result = evaluate_embeddings(
            queries_d,
            documents_d,
            {q: eval_set.dataset.qrels[q] for q in eval_set.query_ids},  # only the (sampled) queries count
            query_ids=eval_set.query_ids,
            doc_ids=eval_set.doc_ids,
            ignore_identical_ids=eval_set.dataset.ignore_identical_ids,
            device=device,
        )
        results[dim] = {"metrics": result["metrics"], "seconds": time.perf_counter() - started}
    return results if dims else results[full_dim]


def _model_and_caches(settings: SweepSettings, cache_dir: Path):
    """The sweep's starting model (on its device), evaluation and validation sets, its filled feature caches and the
    seconds the backbone pass took."""
    model = build_sweep_model(settings).to(torch.device(settings.torch_device()))
    pairs, validation_sets = load_pairs(settings)
    validation_sets = validation_sets or {}
    eval_sets = {name: EvalSet.load(name, settings.max_eval_queries) for name in settings.eval_data}
    print(f"[sweep] caching backbone features ({len(pairs['query'])} training pairs, "
          f"eval: {', '.join([*eval_sets, *validation_sets])}; {settings.backbone_precision} backbone pass)")
    started = time.perf_counter()
    caches = cache_features(model, pairs, {**eval_sets, **validation_sets}, settings.mode, cache_dir,
                            precision=settings.backbone_precision)
    return model, eval_sets, validation_sets, caches, time.perf_counter() - started


def fill_sweep_cache(settings: SweepSettings, cache_dir: str | Path):
    """Run only the backbone pass of ``settings`` into ``cache_dir`` and return ``(query_cache, doc_cache)``.

    Sweeps over a sample of these pairs (a smaller ``max_pairs``), over fewer of a layer-mix cache's layers, or
    with a last-layer head when the cache holds the last layer, then read it instead of encoding again."""
    _, _, _, (_, query_cache, doc_cache), _ = _model_and_caches(settings.resolved(), Path(cache_dir))
    return query_cache, doc_cache


def run_sweep(settings: SweepSettings, output_dir: str | Path, cache_dir: str | Path | None = None,
              time_limit: float | None = None) -> list[dict]:
    """Train and evaluate every head x seed of ``settings``; write runs, tables, plot and cards to ``output_dir``.

    ``cache_dir`` (default ``output_dir/cache``) holds the backbone features; sweeps over the same texts and
    backbone can share one (its entries are keyed by everything they depend on). With ``time_limit`` (seconds from
    the call), no run starts that the longest run so far says would end past it; the report covers the runs done,
    and the same call later goes on from there.

    Returns the run records (one per head x seed, each with metrics per evaluation set).
    """
    settings = settings.resolved()
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    _check_resumable(output, settings)
    atomic_write_json(output / "settings.json", settings.to_dict())
    runs_path = output / "runs.jsonl"
    finished = read_finished_runs(runs_path)
    cache_dir = Path(cache_dir) if cache_dir is not None else output / "cache"

    started_at = time.perf_counter()
    model, eval_sets, validation_sets, caches, cache_seconds = _model_and_caches(settings, cache_dir)
    backbone_state = {k: v.clone() for k, v in model.backbone.state_dict().items()}

    records = list(finished.values())
    longest = 0.0
    # Seed-major order: a sweep stopped part-way has the whole grid at its first seeds, not some heads at all.
    for seed, head in [(seed, head) for seed in settings.seeds for head in settings.heads]:
        key = run_key(head, seed)
        if key in finished:
            continue
        if time_limit is not None and time.perf_counter() - started_at + longest > time_limit:
            print(f"[sweep] time limit of {time_limit:.0f} s reached: stopping before {key} (run again to go on)")
            break
        print(f"[sweep] {key}")
        run_started = time.perf_counter()
        record = _train_and_evaluate(
            model, backbone_state, head, seed, settings, caches, eval_sets, validation_sets, output
        )
        longest = max(longest, time.perf_counter() - run_started)
        record["cache_seconds_this_session"] = cache_seconds
        with runs_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        records.append(record)
    if not records:  # stopped by its time limit before the first run: nothing to report yet
        return records
    write_report(records, settings, output, machine_info())
    if settings.eval_data:  # a validation-only sweep (for choices) has no test metrics to put in a card
        write_head_cards(output, output / "cards")
    return records


def build_sweep_model(settings: SweepSettings, projection: str | dict = "linear") -> ColBERTModel:
    """The ColBERT model every run of ``settings`` starts from: the backbone, shape and tokenisation of the
    sweep (built as ``train()`` builds a fresh model), with a fresh ``projection`` head."""
    return build_model(settings.training_arguments(seed=0).replace(projection=projection))


def load_sweep_run(run_dir: str | Path) -> ColBERTModel:
    """The trained model of one finished run, ``<sweep output>/runs/<head>/seed<k>``, ready to encode or save.

    ``head`` runs rebuild the sweep's model (``settings.json`` two folders up) and load the saved head; ``top-K``
    runs saved their whole model (``model/``), since their last backbone layers trained too.
    """
    run_dir = Path(run_dir)
    if (run_dir / "model" / "config.json").exists():
        return ColBERTModel.from_pretrained(run_dir / "model")
    settings_path = run_dir.parents[2] / "settings.json" if len(run_dir.parents) > 2 else None
    if not (run_dir / "head").is_dir() or settings_path is None or not settings_path.exists():
        raise FileNotFoundError(
            f"{run_dir} is not a finished sweep run: expected {run_dir / 'head'} and the sweep's settings.json two "
            "folders up (<output>/runs/<head>/seed<k>)"
        )
    settings = SweepSettings.from_dict(json.loads(settings_path.read_text(encoding="utf-8"))).resolved()
    return load_head(build_sweep_model(settings), run_dir / "head")


def build_run_head(head: str, seed: int, settings: SweepSettings, d_in: int):
    """The seeded starting head of one run; ``branch_init="zero"`` starts residual heads as the seed's linear head.

    Returns ``(head module, resolved spec)``.
    """
    spec = json.loads(head) if head.lstrip().startswith("{") else head
    torch.manual_seed(seed)
    module = build_projection(spec, d_in, settings.dim)
    if settings.branch_init == "zero" and isinstance(module, ResidualHead) and module.residual:
        torch.manual_seed(seed)
        baseline = build_projection("linear", d_in, settings.dim)
        init_from_linear(module, baseline.linear.weight)
    return module, resolve_spec(spec)


def _train_and_evaluate(model, backbone_state, head, seed, settings, caches, eval_sets, validation_sets, output: Path) -> dict:
    """One run: a fresh head (seeded), the backbone reset, training from the cache, evaluation from the cache."""
    model.backbone.load_state_dict(backbone_state)
    projection, model.config.projection = build_run_head(head, seed, settings, model.config.projection_input_size)
    model.projection = projection.to(next(model.backbone.parameters()).device)
    if getattr(model.layer_mix, "reset_parameters", None) is not None:  # a scalar mix trained in the previous run
        model.layer_mix.reset_parameters()
    run_dir = output / "runs" / head.replace("/", "_") / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    train_data, query_cache, doc_cache = caches
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.train_threads or threads)
    try:
        stats = _train(model, train_data, seed, settings, run_dir)
    finally:
        torch.set_num_threads(threads)
    dims = settings.trained_dims()
    device = next(model.parameters()).device
    by_dim = {
        part: {name: _evaluate_from_cache(model, s, query_cache, doc_cache, dims, device=device,
                                   precision=settings.precision) for name, s in sets.items()}
        for part, sets in (("eval", eval_sets), ("validation", validation_sets))
    }
    evaluation = {name: results[settings.dim] for name, results in by_dim["eval"].items()}
    validation = {name: results[settings.dim] for name, results in by_dim["validation"].items()}
    info = describe(model.projection)
    record = {
        "key": run_key(head, seed),
        "head": head,
        "seed": seed,
        "params": info["params"],
        "macs_per_token": info["macs_per_token"],
        "train_seconds": stats["seconds"],
        "train_steps": stats["steps"],
        "final_loss": stats["loss"],
        "dim": settings.dim,
        "eval": evaluation,
        "validation": validation,
    }
    if settings.matryoshka_dims:  # the truncated dims: {"32": {data set: result}, ...}
        for part in ("eval", "validation"):
            record[f"{part}_by_dim"] = {
                str(d): {name: results[d] for name, results in by_dim[part].items()} for d in dims if d != settings.dim
            }
    _save_run(model, run_dir, record, settings)
    return record


def _train(model, train_data, seed: int, settings: SweepSettings, run_dir: Path) -> dict:
    """The sweep's one training budget: the cached loop with the run's ``ProjectionTrainingArguments``, in-batch
    InfoNCE on MaxSim (summed over the Matryoshka dims when ``settings.matryoshka_dims`` is set)."""
    args = settings.training_arguments(seed)
    return train_from_cache(model, train_data, args, loss=loss_for_training(model, args),
                            log_path=run_dir / "train_log.jsonl")


def _save_run(model, run_dir: Path, record: dict, settings: SweepSettings) -> None:
    """Keep the trained head (safetensors + spec) and a model card; the backbone is the shared base, except in
    ``top-K`` modes, whose trained layers are kept with the whole model (``model/``). The head folder is a projection
    adapter (with the layer mix, if any): ``AutoModel.from_pretrained`` loads it with the backbone it names."""
    save_head(model, run_dir / "head")
    if settings.mode != "head":
        model.save_pretrained(run_dir / "model")
    atomic_write_json(run_dir / "result.json", record)
    write_run_card(run_dir, record, settings)
