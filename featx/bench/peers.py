"""SetFit, the strongest few-shot peer for text (Tunstall et al., 2022): contrastive fine-tuning of the same
sentence encoder on pairs of the training texts, then a logistic regression on its embeddings.

Its default recipe, ``setfit.TrainingArguments()`` as shipped (one epoch over oversampled pairs of the
training texts, batch 16, the body's learning rate 2e-5, cosine-similarity loss, a scikit-learn
``LogisticRegression`` head), on the same subsets and seeds as every row, with what does not change
the recipe: the bench's token limit (``max_length``, as every text row), the seed, torch threads,
no checkpoints or progress bars, a loss logged at every step, and a cap on the contrastive steps
(``setfit_max_steps``: the same kind of cost cap as the fine-tuned rows; a row cut there records
``hit_cap``). The encoder loads from a local sentence-transformers folder (``setfit_model``; default:
the folder the backbone's package ships, the bundled MiniLM's), never from the hub.
"""

from __future__ import annotations

import importlib
import math
import tempfile
import time

from ..errors import ParameterError
from ..extras import require
from ..torchmodels.finetune import count_parameters, torch_threads
from .meter import Meter
from .models import BenchBackbone
from .rows import FT_MODE_LABELS, FinetuneRow, scores
from .splits import Subset
from .table import Context, Table

RECIPE = ("setfit.TrainingArguments() defaults: one epoch over oversampled pairs, batch 16, body lr 2e-5, "
          "CosineSimilarityLoss, LogisticRegression head; the bench's max_length; steps capped at setfit_max_steps")


def setfit_folder(ctx: Context, bb: BenchBackbone) -> str:
    """The sentence-transformers folder SetFit loads: ``setfit_model``, else the backbone package's folder."""
    if ctx.config.setfit_model:
        return str(ctx.config.setfit_model)
    source = bb.spec.source
    if source.get("kind") == "hf-package":
        return str(importlib.import_module(source["module"]).get_model_path())
    raise ParameterError(f"SetFit needs the backbone {bb.name!r} as a sentence-transformers folder: give "
                         "setfit_model= (a folder), or leave 'setfit' out of the modes")


def setfit_row(ctx: Context, subset: Subset, bb: BenchBackbone) -> FinetuneRow:
    """SetFit's default recipe on the subset, then the test set predicted from raw texts."""
    setfit = require("setfit", "bench", "the SetFit rows")
    from datasets import Dataset
    from setfit.sampler import ContrastiveDataset

    config = ctx.config
    texts, labels = list(subset.refs), [str(v) for v in subset.labels]
    pairs = len(ContrastiveDataset(texts, labels, multilabel=False))  # what its recipe would train on
    with tempfile.TemporaryDirectory(prefix="featx-setfit-") as out, torch_threads(config.threads), Meter() as m:
        model = setfit.SetFitModel.from_pretrained(setfit_folder(ctx, bb))
        args = setfit.TrainingArguments(output_dir=out, save_strategy="no", report_to="none", seed=subset.seed,
                                        max_length=_max_length(bb), show_progress_bar=False, logging_steps=1,
                                        max_steps=config.setfit_max_steps or -1)
        wanted = math.ceil(pairs / args.embedding_batch_size) * args.embedding_num_epochs
        trainer = setfit.Trainer(model=model, args=args,
                                 train_dataset=Dataset.from_dict({"text": texts, "label": labels}))
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    losses = [e["embedding_loss"] for e in trainer.st_trainer.state.log_history if "embedding_loss" in e]
    steps = int(trainer.st_trainer.state.global_step) or wanted
    model.model_body.max_seq_length = _max_length(bb)
    t = time.perf_counter()
    with torch_threads(config.threads):
        pred = model.predict(ctx.test_refs, show_progress_bar=False)
    latency = (time.perf_counter() - t) / len(ctx.test_refs)
    head = model.model_head
    head_params = int(head.coef_.size + head.intercept_.size)
    body = count_parameters(model.model_body)
    cap = config.setfit_max_steps
    return FinetuneRow.scored(subset, FT_MODE_LABELS["setfit"], "finetune",
                              scores(ctx.test_labels, [str(p) for p in pred], ctx.splits.classes),
                              finetune_s=seconds, peak_rss_mb=m.peak_mb, trainable_params=body + head_params,
                              predict_ms_per_item=latency * 1000,
                              params={"mode": "setfit", "pairs": pairs, "steps": steps, "steps_wanted": wanted,
                                      "max_steps": cap, "hit_cap": bool(cap and wanted > cap),
                                      "batch_size": args.embedding_batch_size, "lr": args.body_embedding_learning_rate,
                                      "recipe": RECIPE},
                              total_params=body + head_params, loss_first=float(losses[0]) if losses else 0.0,
                              loss_last=float(losses[-1]) if losses else 0.0, seconds_per_step=seconds / max(1, steps))


def _max_length(bb: BenchBackbone) -> int:
    return int(bb.spec.preprocess.max_length)


def run_setfit(ctx: Context, subset: Subset, table: Table, bb: BenchBackbone) -> None:
    """The SetFit row of one subset."""
    row = table.attempt(subset, FT_MODE_LABELS["setfit"], lambda: setfit_row(ctx, subset, bb))
    if row:
        cap = " (hit the cap)" if row.params["hit_cap"] else ""
        table.report(row, f"{row.params['steps']} steps of {row.params['pairs']} pairs{cap} in {row.finetune_s:.1f}s")
