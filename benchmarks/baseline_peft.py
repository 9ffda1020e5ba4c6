"""Peer baselines: Hugging Face PEFT on a frozen backbone (prefix tuning, LoRA).

What a user who wants a shared frozen encoder would pick instead of our
``soft-frozen`` / ``soft-lora`` strategies: the token-classification baseline
of ``baseline_hf_tokcls.py`` (same DocBins, windows, BIO decoding, n2c2 scorer,
per-document metrics for ``compare``) with the backbone wrapped by PEFT
(``peft.get_peft_model``, task type ``TOKEN_CLS``, so the classifier trains too):

* ``--method prefix``: prefix tuning / P-tuning v2 (``PrefixTuningConfig``):
  ``--virtual-tokens`` trained key/value vectors at every layer, the same idea
  as our deep prompts; P-tuning v2's NER recipe: one hot rate (1e-2) for
  prefix and head, long schedule;
* ``--method lora``: LoRA (``LoraConfig``) of ``--rank`` on every attention
  and feed-forward projection (the targets of our ``soft-lora`` strategy),
  ``--alpha``, rate 1e-3.

Each run trains up to ``--epochs`` and stops early after ``--patience`` epochs
without a better dev entity strict F1 (the best epoch is reported).

Run: ``python benchmarks/baseline_peft.py --method prefix|lora [--seed S] [--threads 2]``
(needs ``pip install 'spacy-softprompt[peft]'``); writes
``benchmarks/results/baseline_peft_<method>-seed<S>.json`` and
``benchmarks/results/baseline_peft_<method>-seed<S>.metrics.json``.
"""
import sys
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import baseline_hf_tokcls as hf  # noqa: E402
import bench_common as bc  # noqa: E402

#: per method: learning rate and epoch budget (early stopping ends most runs sooner)
RECIPES = {"prefix": {"lr": 1e-2, "epochs": 40}, "lora": {"lr": 1e-3, "epochs": 30}}


def peft_adapter(method: str, *, virtual_tokens: int = 20, rank: int = 8, alpha: float = 16.0) -> Callable[[Any], Any]:
    """``model -> PeftModel`` for ``method`` (``prefix`` or ``lora``) on a token classifier."""
    from peft import LoraConfig, PrefixTuningConfig, TaskType, get_peft_model

    from spacy_softprompt.encoder.adapters import DEFAULT_ADAPTER_TARGETS

    if method == "prefix":
        config: Any = PrefixTuningConfig(task_type=TaskType.TOKEN_CLS, num_virtual_tokens=int(virtual_tokens))
    elif method == "lora":
        config = LoraConfig(task_type=TaskType.TOKEN_CLS, r=int(rank), lora_alpha=float(alpha), lora_dropout=0.1,
                            target_modules=DEFAULT_ADAPTER_TARGETS, bias="none")
    else:
        raise ValueError(f"method must be 'prefix' or 'lora', got {method!r}")
    return lambda model: get_peft_model(model, config)


def main(argv: Optional[list] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    method = "lora" if "lora" in argv else "prefix"
    if "--method" in argv:
        method = argv[argv.index("--method") + 1]
    recipe = RECIPES.get(method, RECIPES["prefix"])
    parser = hf.make_parser(__doc__, lr=recipe["lr"], epochs=recipe["epochs"],
                            output=bc.RESULTS_DIR / f"baseline_peft_{method}.json")
    parser.add_argument("--method", choices=sorted(RECIPES), required=True)
    parser.add_argument("--virtual-tokens", type=int, default=20, help="prefix: virtual tokens per layer")
    parser.add_argument("--rank", type=int, default=8, help="lora: rank")
    parser.add_argument("--alpha", type=float, default=16.0, help="lora: scaling numerator (alpha / rank)")
    # 10 epochs without a better dev score: long enough for the study's convergence rule (no gain
    # of 0.5 points in the last quarter of the run) to be met by a run that early stopping ends
    parser.set_defaults(patience=10)
    args = hf.parse(parser, argv)
    if "--output" not in argv:
        args.output = bc.RESULTS_DIR / f"baseline_peft_{method}-seed{args.seed}.json"
        if "--metrics-output" not in argv:
            args.metrics_output = hf.common.default_metrics_path(args.output, args.seed)
    adapt = peft_adapter(args.method, virtual_tokens=args.virtual_tokens, rank=args.rank, alpha=args.alpha)
    return hf.run_and_report(args, adapt, system=f"baseline_peft_{args.method}")


if __name__ == "__main__":
    sys.exit(main())
