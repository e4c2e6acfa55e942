"""Our GPT (models/gpt.py) side by side with transformers' GPT2LMHeadModel, same dims.

    python benchmarks/gpt_vs_hf.py [--quick] [--json out.json]

Measured in one run, interleaved (every repetition times each contender in turn), median
of several repetitions after a warm-up, with the same torch thread count (see PERF_NOTES.md):

* training throughput (tokens/s): batch 32 x 128, AdamW, masked cross-entropy over all 128
  targets and gradient clipping for both. Ours is ``GPTModel._train_step``, the step ``fit``
  runs; GPT-2 runs the same loss on its logits (not the ``labels=`` path, which shifts the
  labels itself and trains 127 targets per row). GPT-2 is reported with its default
  ``gelu_new`` and with ``gelu_pytorch_tanh`` (the same activation as ours);
* sampling throughput (new tokens/s) at 256 new tokens, batch 64: our KV cache vs
  ``generate(use_cache=True, do_sample=True, top_k=0)`` (its default would be top_k=50) with
  bos/eos/pad ids inside the vocabulary, and vs our own path that recomputes the prefix.

Targets: train >= 1.0x GPT-2, sampling >= 1.0x ``generate``, KV cache >= 5x recompute.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from benchmarks.common import interleaved, median  # noqa: E402
from models.gpt import GPTModel, GPTTrainConfig, counted_mask, token_nll  # noqa: E402

VOCAB = 256  # byte-level text
BATCH, SEQ = 32, 128
SAMPLE_BATCH, NEW_TOKENS = 64, 256
#: (n_layer, n_head, n_embd): ~0.1M and ~0.8M non-embedding params.
DIMS = {"0.1M": (2, 4, 64), "0.8M": (4, 4, 128)}


def _hf(dims: tuple[int, int, int], activation: str, positions: int) -> Any:
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError as err:  # pragma: no cover - optional dependency
        raise ImportError("the benchmark needs transformers: pip install 'collapse-sweep[bench]'") from err
    n_layer, n_head, n_embd = dims
    config = GPT2Config(
        vocab_size=VOCAB + 1, n_positions=positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        activation_function=activation, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        # GPT2Config defaults bos/eos to 50256, outside a small vocabulary.
        bos_token_id=VOCAB, eos_token_id=0, pad_token_id=0, attn_implementation="sdpa",
    )
    return GPT2LMHeadModel(config).train()


def _ours(dims: tuple[int, int, int], block_size: int) -> GPTModel:
    n_layer, n_head, n_embd = dims
    return GPTModel(vocab_size=VOCAB, block_size=block_size, size=None, n_layer=n_layer,
                    n_head=n_head, n_embd=n_embd, device="cpu",
                    train=GPTTrainConfig(lr=3e-3, batch_size=64, epochs=4.0),
                    seed=0)


def _hf_train_step(model: Any, opt: torch.optim.Optimizer) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same work as ``GPTModel._train_step``: BOS + inputs, masked CE, clip, AdamW."""

    def step(x: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([torch.full((len(x), 1), VOCAB), x[:, :-1]], dim=1)
        nll = token_nll(model(input_ids=inputs).logits, x)
        mask = counted_mask(x)
        loss = (nll * mask).sum() / mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.detach()

    return step


def _interleaved(contenders: dict[str, Callable[[], float]], reps: int) -> dict[str, float]:
    """Median seconds per call of each contender: one warm-up, then reps rounds in turn."""
    return {name: median(ts) for name, ts in interleaved(contenders, reps=reps).items()}


def bench_train(label: str, dims: tuple[int, int, int], *, steps: int, reps: int) -> list[dict]:
    x = torch.from_numpy(np.random.default_rng(0).integers(1, VOCAB, size=(BATCH, SEQ)))
    ours = _ours(dims, SEQ)
    ours_opt = ours._optimizer()
    contenders: dict[str, Callable[[], float]] = {}

    def run_ours() -> float:
        for _ in range(steps):
            ours._train_step(x, ours_opt)
        return 0.0

    contenders["ours"] = run_ours
    for act in ("gelu_new", "gelu_pytorch_tanh"):
        model = _hf(dims, act, SEQ)
        # Same optimiser settings as ours (weight decay on matrices only, fused kernel).
        groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.01},
                  {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
        step = _hf_train_step(model, torch.optim.AdamW(groups, lr=3e-3, betas=(0.9, 0.95), fused=True))

        def run_hf(step: Callable[[torch.Tensor], torch.Tensor] = step) -> float:
            for _ in range(steps):
                step(x)
            return 0.0

        contenders[f"hf_{act}"] = run_hf
    secs = _interleaved(contenders, reps)
    tps = {name: steps * BATCH * SEQ / s for name, s in secs.items()}
    out = [_result(f"train_tokens_per_s/{name}[{label}]", v, "tokens/s") for name, v in tps.items()]
    for act in ("gelu_new", "gelu_pytorch_tanh"):
        out.append(_result(f"train_speedup_vs_hf_{act}[{label}]", tps["ours"] / tps[f"hf_{act}"],
                           "x", target=1.0))
    return out


def bench_sample(label: str, dims: tuple[int, int, int], *, reps: int) -> list[dict]:
    ours = _ours(dims, NEW_TOKENS)
    hf = _hf(dims, "gelu_pytorch_tanh", NEW_TOKENS + 1).eval()
    bos = torch.full((SAMPLE_BATCH, 1), VOCAB)
    lengths: dict[str, int] = {}

    def run_cache() -> float:
        lengths["ours"] = ours.sample(SAMPLE_BATCH, np.random.default_rng(0), max_len=NEW_TOKENS).shape[1]
        return 0.0

    def run_recompute() -> float:
        ours.sample(SAMPLE_BATCH, np.random.default_rng(0), max_len=NEW_TOKENS, use_cache=False)
        return 0.0

    def run_hf() -> float:
        with torch.no_grad():
            out = hf.generate(bos, attention_mask=torch.ones_like(bos), max_new_tokens=NEW_TOKENS,
                              do_sample=True, top_k=0, top_p=1.0, temperature=1.0, use_cache=True,
                              bos_token_id=VOCAB, eos_token_id=0, pad_token_id=0)
        lengths["hf"] = out.shape[1] - 1
        return 0.0

    secs = _interleaved({"ours_cache": run_cache, "hf_generate": run_hf,
                         "ours_recompute": run_recompute}, reps)
    if lengths["ours"] != NEW_TOKENS or lengths["hf"] != NEW_TOKENS:
        raise RuntimeError(f"unequal work: generated lengths {lengths}")
    tps = {name: SAMPLE_BATCH * NEW_TOKENS / s for name, s in secs.items()}
    out = [_result(f"sample_tokens_per_s/{name}[{label}]", v, "tokens/s") for name, v in tps.items()]
    out.append(_result(f"sample_speedup_vs_hf_generate[{label}]",
                       tps["ours_cache"] / tps["hf_generate"], "x", target=1.0))
    out.append(_result(f"kv_cache_speedup_vs_recompute[{label}]",
                       tps["ours_cache"] / tps["ours_recompute"], "x", target=5.0))
    return out


def _result(name: str, value: float, unit: str, target: float | None = None) -> dict:
    return {"name": name, "value": float(value), "unit": unit, "target": target,
            "met": None if target is None else bool(value >= target)}


def run(quick: bool) -> list[dict]:
    """All measurements; ``quick`` keeps the small model and fewer repetitions (CI smoke)."""
    threads = torch.get_num_threads()  # both contenders share this process, so this count
    labels = ["0.1M"] if quick else list(DIMS)
    results = []
    for label in labels:
        results += bench_train(label, DIMS[label], steps=2 if quick else 5, reps=3 if quick else 7)
    results += bench_sample("0.1M", DIMS["0.1M"], reps=1 if quick else 3)
    for r in results:
        r["threads"] = threads
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model, few repetitions")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    load_before = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    t0 = time.perf_counter()
    results = run(args.quick)
    for r in results:
        met = "" if r["met"] is None else ("  met" if r["met"] else "  NOT MET")
        target = "" if r["target"] is None else f"  (target >= {r['target']:g}{r['unit']})"
        print(f"{r['name']:<50} {r['value']:>12.2f} {r['unit']}{target}{met}")
    # Other processes on these 2 cores stall every OpenMP region: check the load is ~0.
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"threads: {torch.get_num_threads()}, wall: {time.perf_counter() - t0:.0f} s, "
          f"load average before: {load_before}, after: {load}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
