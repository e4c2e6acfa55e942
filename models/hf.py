"""Any causal LM from Hugging Face ``transformers`` behind the Model protocol.

Items are the byte-level rows of local text that the ``gpt`` family uses (int64 (n, L), byte
b is id b, 0 = EOS and the padding after it), so the two families share data, curation and
judges, and their NLLs are both per byte. Inside, a row is decoded to text and tokenized by
the checkpoint's own tokenizer; the model sees ``BOS tokens [EOS]`` (EOS when the row ends
before its last byte), and a row's log-likelihood is the sum of its tokens' log-probabilities
under that tokenization.

``path`` is a local directory with ``config.json``, weights and a tokenizer (or a hub name
on a machine with the network; nothing is downloaded when ``local_only``). ``reset`` (init
``scratch``) draws fresh random weights for the architecture; ``load_pretrained`` restores
the checkpoint's weights (init ``base``: every generation fine-tunes the pretrained model,
as Shumailov et al. do with OPT-125m).

Sampling is batched ``generate`` with the KV cache. Its randomness is a Gumbel-max logits
processor fed from a ``torch.Generator`` derived from the caller's rng, decoding greedily:
argmax(logits + Gumbel noise) is a draw from softmax(logits), and the same noise is drawn
with or without the cache, so both give the same tokens (the GPT's convention).
FLOPs: 6 N per trained token, 2 N per sampled or scored token (Kaplan et al.), N the
parameters without the input embeddings.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.base import check_items
from models.tokens import EOS, counted_mask, item_size


@dataclass
class HFTrainConfig:
    lr: float = 5e-4
    """AdamW peak learning rate (cosine decay to lr / 10)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    batch_size: int = 16
    """Rows per optimisation step."""
    epochs: float = 1.0
    """Budget: passes over this generation's training set."""
    steps: int | None = None
    """If set, exactly this many optimisation steps instead of ``epochs``."""
    grad_clip: float = 1.0
    """Gradient norm clip (0 disables)."""
    eval_batch_size: int = 64
    """Rows per batch when scoring and sampling."""


@dataclass
class _FitRecord:
    items: int = 0
    tokens: int = 0  # token positions processed, all steps
    steps: int = 0
    train_loss: float = float("nan")


class _GumbelNoise:
    """A logits processor that adds Gumbel noise drawn from one generator (one (B, V) draw
    per generated token), after temperature / top-k / top-p filtering."""

    def __init__(self, generator: torch.Generator, *, temperature: float, top_k: int, top_p: float) -> None:
        self.generator, self.temperature, self.top_k, self.top_p = generator, temperature, top_k, top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = _filter(scores.float(), temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        u = torch.rand(logits.shape, generator=self.generator, device=logits.device)
        return logits - torch.log(-torch.log(u.clamp_(min=1e-20)))


def _filter(logits: torch.Tensor, *, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    logits = logits / temperature
    if 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = (torch.cumsum(probs, dim=-1) - probs) >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return logits


class HFModel:
    """A ``transformers`` causal LM over byte-level text rows; see the module docstring."""

    def __init__(self, path: str, *, block_size: int, train: HFTrainConfig | None = None,
                 device: str | None = None, seed: int = 0, local_only: bool = True) -> None:
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:  # pragma: no cover - transformers is in the bench extra
            raise ImportError("family hf needs transformers: pip install 'collapse-sweep[bench]'") from exc
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        hf_logging.disable_progress_bar()  # one bar per checkpoint load would flood the CLI
        self.path, self.block_size = path, block_size
        self.train_config = train or HFTrainConfig()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
            net = AutoModelForCausalLM.from_pretrained(path, local_files_only=local_only)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot load a causal LM and tokenizer from {path!r}: "
                             f"{str(exc).splitlines()[0]}") from None
        self.net = net.to(self.device)
        self._pretrained = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        tok = self.tokenizer
        self.eos_id = tok.eos_token_id if tok.eos_token_id is not None else 0
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else self.eos_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_id
        self.temperature, self.top_p, self.top_k = 1.0, 1.0, 0
        self.max_new_tokens = block_size  # a token is at least one byte
        self._fit = _FitRecord()
        self._tokens_per_sample = float(block_size)
        self._seed = seed

    # ---- bookkeeping
    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    @property
    def n_flop_params(self) -> int:
        """Parameters that cost a multiply-add per token: all but the input embeddings (a
        tied output head counts once, as the matmul it is)."""
        emb = self.net.get_input_embeddings().weight
        out = self.net.get_output_embeddings()
        tied = out is not None and out.weight.data_ptr() == emb.data_ptr()
        return self.n_params - (0 if tied else emb.numel())

    def _generator(self, rng: np.random.Generator) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(rng.integers(2**62)))

    def _texts(self, data: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Rows -> (texts, ends_with_eos) for byte-level rows."""
        x = check_items(data, ndim=2).astype(np.int64, copy=False)
        if x.min() < 0 or x.max() > 255:
            raise ValueError(f"items must be byte rows (ids 0..255), got [{x.min()}, {x.max()}]")
        mask = counted_mask(x)
        texts, ended = [], []
        for row, m in zip(x, mask, strict=True):
            body = row[m & (row != EOS)]
            texts.append(bytes(body.astype(np.uint8)).decode("utf-8", errors="replace"))
            ended.append(bool((row == EOS).any()))
        return texts, np.array(ended)

    def _encode(self, data: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (n, T) = BOS tokens [EOS] padded, target mask (n, T): tokens after BOS)."""
        texts, ended = self._texts(data)
        rows = []
        for text, end in zip(texts, ended, strict=True):
            ids = [self.bos_id, *self.tokenizer(text, add_special_tokens=False)["input_ids"]]
            rows.append(ids + ([self.eos_id] if end else []))
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, 1: len(r)] = True
        return ids.to(self.device), mask.to(self.device)

    def _token_logp(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Log-probability of each target token (n, T - 1), 0 where not a target."""
        attention = torch.ones_like(ids)
        attention[:, 1:] = mask[:, 1:]  # padding after a row's end is not attended to
        logits = self.net(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        return torch.where(mask[:, 1:], logp, torch.zeros_like(logp))

    # ---- initialisation
    def reset(self, rng: np.random.Generator) -> None:
        """Fresh random weights of the same architecture (init ``scratch``), seeded by rng."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**62)))
            self.net.apply(self.net._init_weights)
            self.net.tie_weights()

    def load_pretrained(self) -> None:
        """Restore the checkpoint's weights (init ``base``)."""
        self.net.load_state_dict({k: v.to(self.device) for k, v in self._pretrained.items()})

    # ---- the protocol
    def fit(self, data: np.ndarray, rng: np.random.Generator) -> None:
        """Fine-tune from the current weights (the caller resets or reloads them)."""
        tc = self.train_config
        ids, mask = self._encode(data)
        shuffle = torch.Generator().manual_seed(int(rng.integers(2**62)))  # CPU: randperm
        steps_per_epoch = max(1, math.ceil(len(ids) / tc.batch_size))
        total = tc.steps if tc.steps is not None else max(1, math.ceil(tc.epochs * steps_per_epoch))
        decay = [p for p in self.net.parameters() if p.dim() >= 2]
        rest = [p for p in self.net.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=tc.lr)
        record = _FitRecord(items=len(ids))
        order = torch.empty(0, dtype=torch.long)
        self.net.train()
        loss = torch.tensor(float("nan"))
        for step in range(total):
            if len(order) == 0:  # a fresh shuffle each epoch
                order = torch.randperm(len(ids), generator=shuffle)
            idx, order = order[: tc.batch_size], order[tc.batch_size:]
            for g in opt.param_groups:
                g["lr"] = tc.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * step / total)))
            b_ids, b_mask = ids[idx.to(self.device)], mask[idx.to(self.device)]
            width = int(b_mask.sum(1).max()) + 1  # trim padding columns of this batch
            b_ids, b_mask = b_ids[:, :width], b_mask[:, :width]
            logp = self._token_logp(b_ids, b_mask)
            loss = -logp.sum() / b_mask[:, 1:].sum().clamp(min=1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), tc.grad_clip)
            opt.step()
            record.tokens += b_ids.numel()
            record.steps += 1
        record.train_loss = float(loss.detach())
        self._fit = record
        self.net.eval()

    @torch.no_grad()
    def log_prob(self, data: np.ndarray) -> np.ndarray:
        """Log-likelihood per row (nats): the sum over its tokens (and EOS when it ends)."""
        self.net.eval()
        out = []
        bs = self.train_config.eval_batch_size
        for start in range(0, len(data), bs):
            ids, mask = self._encode(np.asarray(data)[start:start + bs])
            out.append(self._token_logp(ids, mask).sum(1).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros(0)

    def sample_log_prob(self, data: np.ndarray) -> np.ndarray:
        if (self.temperature, self.top_p, self.top_k) != (1.0, 1.0, 0):
            raise ValueError("hf: the density of tempered / truncated sampling is not computed; "
                             "sample with temperature 1, top_p 1, top_k 0 to score by it")
        return self.log_prob(data)

    def item_size(self, data: np.ndarray) -> np.ndarray:
        return item_size(data)

    @torch.no_grad()
    def sample_tokens(self, n: int, rng: np.random.Generator, *, use_cache: bool = True) -> torch.Tensor:
        """n generated token sequences (n, T) after BOS, the tokenizer's ids (EOS-padded)."""
        from transformers import LogitsProcessorList

        self.net.eval()
        gen = self._generator(rng)
        noise = _GumbelNoise(gen, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        chunks = []
        bs = self.train_config.eval_batch_size
        for start in range(0, n, bs):
            b = min(bs, n - start)
            bos = torch.full((b, 1), self.bos_id, dtype=torch.long, device=self.device)
            out = self.net.generate(
                input_ids=bos, attention_mask=torch.ones_like(bos), do_sample=False, num_beams=1,
                max_new_tokens=self.max_new_tokens, use_cache=use_cache,
                logits_processor=LogitsProcessorList([noise]), eos_token_id=self.eos_id,
                pad_token_id=self.pad_id, top_k=None, top_p=None, temperature=None)
            seq = out[:, 1:]
            chunks.append(torch.nn.functional.pad(seq, (0, self.max_new_tokens - seq.size(1)),
                                                  value=self.pad_id))
        return torch.cat(chunks) if chunks else torch.zeros((0, self.max_new_tokens), dtype=torch.long)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n byte rows (n, block_size): generated text as UTF-8, cut at block_size bytes,
        EOS-padded when it ended earlier."""
        tokens = self.sample_tokens(n, rng)
        out = np.zeros((n, self.block_size), dtype=np.int64)
        lengths = []
        for i, seq in enumerate(tokens.tolist()):
            ended = self.eos_id in seq
            seq = seq[: seq.index(self.eos_id)] if ended else seq
            lengths.append(len(seq) + int(ended))
            raw = self.tokenizer.decode(seq, skip_special_tokens=True).encode("utf-8")
            raw = raw.replace(b"\x00", b"")[: self.block_size]
            out[i, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        if n:
            self._tokens_per_sample = float(np.mean(lengths))
        return out

    def flops(self, op: str, n_items: int) -> float:
        """6 N per trained token (positions processed by the last fit, per item, scaled to
        ``n_items``; before any fit, ``epochs`` x block_size), 2 N per sampled token (the last
        sample's mean length) and per scored token (block_size per item, an upper bound)."""
        N = self.n_flop_params
        if op == "fit":
            f = self._fit
            per_item = f.tokens / f.items if f.items else self.train_config.epochs * self.block_size
            return 6.0 * N * per_item * n_items
        if op == "sample":
            return 2.0 * N * self._tokens_per_sample * n_items
        if op == "score":
            return 2.0 * N * self.block_size * n_items
        raise ValueError(f"op: {op!r} (allowed: fit, sample, score)")

    def summary(self) -> dict[str, float]:
        f = self._fit
        return {"n_params": float(self.n_params), "train_loss": f.train_loss, "steps": float(f.steps)}

    def state_dict(self) -> dict[str, Any]:
        weights = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        return {"weights": weights, "fit_items": self._fit.items, "fit_tokens": self._fit.tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict({k: v.to(self.device) for k, v in copy.copy(state["weights"]).items()})
        self._fit = _FitRecord(items=int(state.get("fit_items", 0)), tokens=int(state.get("fit_tokens", 0)))


def make_tiny_checkpoint(out: str | Path, corpus: str | Path, *, vocab: int = 300,
                         n_embd: int = 32, n_layer: int = 2, n_head: int = 2,
                         n_positions: int = 256, seed: int = 0) -> Path:
    """A tiny random GPT-2 with a byte-level BPE tokenizer trained on ``corpus``, saved to
    ``out`` with ``save_pretrained`` like any local checkpoint (tests, ``configs/hf-tiny.yaml``;
    nothing is downloaded)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = Path(out)
    bpe = ByteLevelBPETokenizer()
    bpe.train([str(corpus)], vocab_size=vocab, min_frequency=2, special_tokens=["<|endoftext|>"],
              show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    # GPT2Config's bos/eos default to 50256, outside a small vocabulary: set them.
    cfg = GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                     n_head=n_head, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        GPT2LMHeadModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="Write a tiny random GPT-2 and a BPE tokenizer trained on a text file to a "
        "directory (a local checkpoint for `model: {family: hf, path: DIR}`).")
    parser.add_argument("out", help="directory to write")
    parser.add_argument("--corpus", default=str(Path(__file__).resolve().parent.parent / "sweep"
                                                / "problems" / "corpus" / "tales.txt"),
                        help="text file the tokenizer is trained on (default: builtin:tales)")
    args = parser.parse_args()
    print(make_tiny_checkpoint(args.out, args.corpus))
