"""A small decoder-only transformer (nanoGPT style) behind the Model protocol.

Items are int64 token arrays of shape (n, L), L <= block_size. Id 0 is EOS and also the
padding after the first EOS; a row without 0 is a full-length (truncated) sequence. The
model prepends a BOS token (id ``vocab_size``, one extra embedding row) so the first token
is predicted too. Likelihoods count tokens up to and including the first EOS.

Everything random flows from the ``numpy.random.Generator`` the caller passes in (through a
``torch.Generator`` on the model's device); nothing global is seeded.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from models.base import check_items
from models.gpt_settings import SIZES, GPTTrainConfig  # noqa: F401 - re-exported
from models.tokens import EOS, item_size  # noqa: F401 - item_size re-exported
from models.tokens import counted_mask as _np_counted_mask


# --------------------------------------------------------------------------- the network
@dataclass
class GPTConfig:
    vocab_size: int  # output tokens, EOS (id 0) included; BOS gets one more embedding row
    block_size: int  # longest item; positions 0..block_size-1 hold BOS + block_size-1 tokens
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 48
    dropout: float = 0.0
    bias: bool = True


KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (B, nh, T_max, hs) keys, values


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head})")
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                pos: int = 0) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            # Write this step's keys/values into the preallocated cache and attend over the
            # whole prefix; the new queries are the last positions, so for T == 1 no mask is
            # needed, and a multi-token prefill still needs the causal one.
            k_cache, v_cache = cache
            k_cache[:, :, pos:pos + T] = k
            v_cache[:, :, pos:pos + T] = v
            k, v = k_cache[:, :, :pos + T], v_cache[:, :, :pos + T]
        causal = T > 1
        if causal and k.size(2) != T:  # prefill after a non-empty prefix: explicit mask
            mask = torch.ones(T, k.size(2), dtype=torch.bool, device=x.device).tril(k.size(2) - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # tanh-GELU as one fused op (GPT-2's gelu_new spelled in Python is several ops).
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                pos: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, pos)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size + 1, config.n_embd)  # +1: the BOS row
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)

    def init_weights(self, generator: torch.Generator) -> None:
        """GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer)."""
        proj_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, 0.0, proj_std, generator=generator)
                elif p.dim() >= 2:  # linear and embedding matrices
                    nn.init.normal_(p, 0.0, 0.02, generator=generator)
                elif "ln" in name and name.endswith("weight"):
                    p.fill_(1.0)
                else:  # biases
                    p.zero_()

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, pos: int = 0) -> torch.Tensor:
        """Logits (B, T, vocab_size) for inputs idx (B, T) placed at positions pos..pos+T-1."""
        T = idx.size(1)
        positions = torch.arange(pos, pos + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(positions))  # (B, T, C)
        for i, block in enumerate(self.h):
            x = block(x, None if cache is None else cache[i], pos)
        x = self.ln_f(x)
        # Weight tying: the output head is the token embedding without the BOS row, so BOS
        # is never predicted.
        return F.linear(x, self.wte.weight[: self.config.vocab_size])

    def new_cache(self, batch: int, length: int) -> KVCache:
        c = self.config
        shape = (batch, c.n_head, length, c.n_embd // c.n_head)
        w = self.wte.weight
        return [(w.new_empty(shape), w.new_empty(shape)) for _ in range(c.n_layer)]


# --------------------------------------------------------------------------- token helpers
def counted_mask(tokens: np.ndarray | torch.Tensor) -> Any:
    """True at tokens up to and including each row's first EOS (tensors too)."""
    if isinstance(tokens, torch.Tensor):
        eos_before = torch.cumsum((tokens == EOS).int(), dim=1) - (tokens == EOS).int()
        return eos_before == 0
    return _np_counted_mask(tokens)


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token NLL (B, T) of targets (B, T) under logits (B, T, V)."""
    # Flattened: log_softmax over the contiguous last dim is ~1.4x faster than over dim 1.
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T), reduction="none").view(B, T)


def filter_logits(logits: torch.Tensor, *, temperature: float, top_k: int,
                  top_p: float) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering of (B, V) logits."""
    logits = logits / temperature
    if 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the mass before it already reaches top_p (the first always stays).
        drop = (torch.cumsum(probs, dim=-1) - probs) >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return logits


# --------------------------------------------------------------------------- the Model
@dataclass
class _FitRecord:
    items: int = 0
    tokens: int = 0  # positions trained on (rows x padded width, what the matmuls cost), all epochs
    val_tokens: int = 0  # positions scored by validation passes (early stopping)
    steps: int = 0
    epochs_run: float = 0.0
    train_loss: float = float("nan")
    val_loss: float = float("nan")


class GPTModel:
    """Decoder-only transformer over token items; see the module docstring for conventions."""

    def __init__(self, *, vocab_size: int, block_size: int, size: str | None = "xs",
                 n_layer: int | None = None, n_head: int | None = None,
                 n_embd: int | None = None, train: GPTTrainConfig | None = None,
                 device: str | None = None, seed: int = 0, dropout: float = 0.0,
                 bias: bool = True) -> None:
        if size is not None and size not in SIZES:
            raise ValueError(f"size: {size!r} (allowed: {', '.join(SIZES)})")
        base = SIZES[size] if size is not None else (None, None, None)
        dims = [v if v is not None else b for v, b in zip((n_layer, n_head, n_embd), base, strict=True)]
        if any(d is None for d in dims):
            raise ValueError("give size, or all of n_layer, n_head and n_embd")
        if vocab_size < 2 or block_size < 1:
            raise ValueError(f"need vocab_size >= 2 and block_size >= 1, got {vocab_size}, {block_size}")
        self.config = GPTConfig(vocab_size, block_size, *dims, dropout=dropout, bias=bias)
        self.train_config = train or GPTTrainConfig()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # Built on the meta device, so torch's default init neither runs nor advances the
        # global RNG; reset() below initialises every weight from the seed.
        with torch.device("meta"):
            net = GPT(self.config)
        self.net = net.to_empty(device=self.device)
        self.temperature = 1.0
        self.top_p = 1.0
        self.top_k = 0
        self._fit = _FitRecord()
        self._tokens_per_sample = float(block_size)  # refreshed by every sample() call
        self.reset(np.random.default_rng(seed))

    # ---- bookkeeping
    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def block_size(self) -> int:
        return self.config.block_size

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    @property
    def n_flop_params(self) -> int:
        """Params that cost a multiply-add per token: blocks + the tied output head."""
        c = self.config
        blocks = sum(p.numel() for p in self.net.h.parameters())
        return blocks + sum(p.numel() for p in self.net.ln_f.parameters()) + c.vocab_size * c.n_embd

    def _generator(self, rng: np.random.Generator) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(rng.integers(2**62)))

    def _tensor(self, tokens: np.ndarray) -> torch.Tensor:
        x = check_items(tokens, ndim=2).astype(np.int64, copy=False)
        if x.shape[1] > self.block_size:
            raise ValueError(f"items have {x.shape[1]} tokens, more than block_size {self.block_size}")
        if x.min() < 0 or x.max() >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got [{x.min()}, {x.max()}]")
        return torch.from_numpy(x).to(self.device)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """BOS followed by all but the last token: position t predicts x[:, t]."""
        bos = torch.full((x.size(0), 1), self.vocab_size, dtype=x.dtype, device=x.device)
        return torch.cat([bos, x[:, :-1]], dim=1)

    def _token_nll(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token NLL (B, T) and the counted mask (B, T)."""
        return token_nll(self.net(self._inputs(x)), x), counted_mask(x)

    # ---- the protocol
    def reset(self, rng: np.random.Generator) -> None:
        """Re-initialise every weight from ``rng`` (training from scratch)."""
        self.net.init_weights(self._generator(rng))

    def fit(self, data: np.ndarray, rng: np.random.Generator) -> None:
        """Train from the current weights (warm start); the caller resets for scratch."""
        tc = self.train_config
        x_all = self._tensor(data)
        # Trim trailing all-padding columns so short-sequence data does not pay for them.
        x_all = x_all[:, : max(int(item_size(data).max()), 1)]
        perm = torch.from_numpy(rng.permutation(len(x_all))).to(self.device)
        n_val = int(len(x_all) * tc.val_fraction) if tc.early_stopping and len(x_all) >= 20 else 0
        x_val, x_train = x_all[perm[:n_val]], x_all[perm[n_val:]]
        gen = self._generator(rng)
        with _dropout_rng(self.config.dropout > 0, gen, self.device):
            self._train(x_train, x_val, gen)

    def _train(self, x_train: torch.Tensor, x_val: torch.Tensor, gen: torch.Generator) -> None:
        tc = self.train_config
        n_val = len(x_val)
        steps_per_epoch = max(1, math.ceil(len(x_train) / tc.batch_size))
        if tc.token_budget is not None:
            counted = float(counted_mask(x_train).sum()) / len(x_train)
            total_steps = max(1, math.ceil(tc.token_budget / (tc.batch_size * counted)))
        else:
            total_steps = max(1, math.ceil(tc.epochs * steps_per_epoch))
        eval_every = max(1, min(steps_per_epoch // tc.evals_per_epoch, math.ceil(total_steps / 8)))
        opt = self._optimizer()
        warmup_steps = int(tc.warmup * total_steps)

        record = _FitRecord(items=len(x_train) + n_val)
        best_val, best_state, bad_evals = float("inf"), None, 0
        order = torch.empty(0, dtype=torch.long, device=self.device)
        for step in range(total_steps):
            with _phase("gpt.data"):
                if len(order) == 0:  # a fresh shuffle each epoch, drawn from the fit's generator
                    order = torch.randperm(len(x_train), generator=gen, device=self.device)
                idx, order = order[: tc.batch_size], order[tc.batch_size:]
                batch = x_train[idx]
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total_steps, warmup_steps, tc.lr)
            loss = self._train_step(batch, opt)
            record.tokens += idx.numel() * x_train.size(1)
            record.steps += 1
            if n_val and ((step + 1) % eval_every == 0 or step + 1 == total_steps):
                with _phase("gpt.validate"):
                    val = self._mean_nll(x_val)
                record.val_tokens += x_val.numel()
                if val < best_val:
                    best_val, bad_evals = val, 0
                    best_state = copy.deepcopy(self.net.state_dict())
                else:
                    bad_evals += 1
                    if bad_evals >= tc.patience:
                        break
        if best_state is not None:  # early stopping keeps the best validated weights
            self.net.load_state_dict(best_state)
        record.train_loss = float(loss)  # the last step's loss; one device sync per fit
        record.val_loss = best_val if n_val else float("nan")
        record.epochs_run = record.steps / steps_per_epoch
        self._fit = record

    def _optimizer(self) -> torch.optim.Optimizer:
        decay = [p for p in self.net.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.net.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": self.train_config.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        # The fused kernel updates each tensor in one pass (CPU and CUDA) where torch's CPU
        # default loops ~10 ops per parameter: ~3x faster optimizer steps on this CPU
        # (benchmarks/gpt_utilisation.py), and far fewer small multithreaded ops to stall
        # when other processes share the cores. Results move within float32 rounding (the
        # recorded GPT frames still match to rtol 1e-5).
        fused = True if torch.device(self.device).type in ("cpu", "cuda") else None
        return torch.optim.AdamW(groups, lr=self.train_config.lr, betas=(0.9, 0.95), fused=fused)

    def _train_step(self, x: torch.Tensor, opt: torch.optim.Optimizer) -> torch.Tensor:
        """One optimiser step on the rows x; the mean loss, left on the device (no sync)."""
        self.net.train()
        with _phase("gpt.forward"), _train_autocast(self.device):
            nll, mask = self._token_nll(x)
            loss = (nll * mask).sum() / mask.sum()
        with _phase("gpt.backward"):
            opt.zero_grad(set_to_none=True)
            loss.backward()
        if self.train_config.grad_clip > 0:
            with _phase("gpt.clip"):
                nn.utils.clip_grad_norm_(self.net.parameters(), self.train_config.grad_clip)
        with _phase("gpt.optimizer"):
            opt.step()
        return loss.detach()

    @torch.no_grad()
    def _mean_nll(self, x: torch.Tensor) -> float:
        """Per-token NLL over all counted tokens of x."""
        total, count = 0.0, 0
        self.net.eval()
        for chunk in x.split(self.train_config.eval_batch_size):
            nll, mask = self._token_nll(chunk)
            total += float((nll * mask).sum())
            count += int(mask.sum())
        return total / max(count, 1)

    @torch.no_grad()
    def log_prob(self, data: np.ndarray) -> np.ndarray:
        """Log-likelihood per row (nats), summed over the counted tokens."""
        x = self._tensor(data)
        self.net.eval()
        out = [-(nll * mask).sum(dim=1) for nll, mask in
               (self._token_nll(chunk) for chunk in x.split(self.train_config.eval_batch_size))]
        return torch.cat(out).double().cpu().numpy()

    @torch.no_grad()
    def token_log_prob(self, data: np.ndarray) -> np.ndarray:
        """(n, L): log p(x_t | x_<t) at every counted token, 0 at padding; rows sum to
        ``log_prob`` (one forward pass gives both, for the per-token tail)."""
        x = self._tensor(data)
        self.net.eval()
        out = [-(nll * mask) for nll, mask in
               (self._token_nll(chunk) for chunk in x.split(self.train_config.eval_batch_size))]
        return torch.cat(out).double().cpu().numpy()

    @torch.no_grad()
    def sample_log_prob(self, data: np.ndarray) -> np.ndarray:
        """Log-probability per row under what ``sample`` draws from: every next-token
        distribution after temperature, top-k and top-p (the proposal density of an
        importance weight; equals ``log_prob`` with the default knobs)."""
        opts = {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}
        if opts == {"temperature": 1.0, "top_k": 0, "top_p": 1.0}:
            return self.log_prob(data)
        x = self._tensor(data)
        self.net.eval()
        out = []
        for chunk in x.split(self.train_config.eval_batch_size):
            logits = self.net(self._inputs(chunk))
            B, T, V = logits.shape
            logp = torch.log_softmax(filter_logits(logits.reshape(B * T, V), **opts), dim=-1)
            token = logp.gather(-1, chunk.reshape(-1, 1)).view(B, T)
            out.append(torch.where(counted_mask(chunk), token, torch.zeros_like(token)).sum(dim=1))
        return torch.cat(out).double().cpu().numpy()

    def item_size(self, data: np.ndarray) -> np.ndarray:
        return item_size(data)

    @torch.no_grad()
    def sample(self, n: int, rng: np.random.Generator, *, temperature: float | None = None,
               top_p: float | None = None, top_k: int | None = None, max_len: int | None = None,
               use_cache: bool = True, prompt: np.ndarray | None = None) -> np.ndarray:
        """n sequences (n, max_len) int64, 0-padded after EOS; defaults from the attributes.

        ``prompt`` (n, k): each row starts with its prompt's k tokens and the model continues
        it (a prompt that holds EOS is already complete). Both paths draw the same Gumbel
        noise (one value per row and token per sampled step) from the same generator, so with
        and without the KV cache the same rng gives the same tokens.
        """
        opts = {"temperature": self.temperature if temperature is None else temperature,
                "top_p": self.top_p if top_p is None else top_p,
                "top_k": self.top_k if top_k is None else top_k}
        max_len = self.block_size if max_len is None else max_len
        if not 1 <= max_len <= self.block_size:
            raise ValueError(f"max_len must lie in [1, {self.block_size}], got {max_len}")
        prompts = None
        if prompt is not None:
            prompts = self._tensor(prompt)
            if len(prompts) != n or prompts.size(1) >= max_len:
                raise ValueError(f"prompt must have shape (n={n}, k) with k < max_len={max_len}, "
                                 f"got {tuple(prompts.shape)}")
        gen = self._generator(rng)
        self.net.eval()
        bs = self.train_config.eval_batch_size
        chunks = [self._sample_batch(min(bs, n - start), max_len, gen, use_cache,
                                     None if prompts is None else prompts[start:start + bs], **opts)
                  for start in range(0, n, bs)]
        out = torch.cat([c for c, _ in chunks]).cpu().numpy() if chunks else np.zeros((0, max_len), np.int64)
        if n:  # positions run (rows x decoding steps, steps after a row's EOS included)
            self._tokens_per_sample = sum(steps * len(c) for c, steps in chunks) / n
        return out

    def _sample_batch(self, b: int, max_len: int, gen: torch.Generator, use_cache: bool,
                      prompt: torch.Tensor | None, **opts: Any) -> tuple[torch.Tensor, int]:
        """(b, max_len) rows and the decoding steps run (the batch stops when all rows end)."""
        seq = torch.full((b, max_len + 1), self.vocab_size, dtype=torch.long, device=self.device)
        done = torch.zeros(b, dtype=torch.bool, device=self.device)
        steps = max_len
        cache = self.net.new_cache(b, max_len) if use_cache else None
        for t in range(max_len):
            if use_cache:  # feed only the newest token; the cache holds the prefix
                logits = self.net(seq[:, t:t + 1], cache, pos=t)[:, -1]
            else:  # recompute the whole prefix (reference path, and the benchmark's baseline)
                logits = self.net(seq[:, : t + 1])[:, -1]
            if prompt is not None and t < prompt.size(1):  # teacher-forced prompt token
                token = prompt[:, t]
            else:
                # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits).
                # Unlike inverting the CDF, a token flips between the two paths only when two
                # perturbed logits tie to float precision, not whenever u falls near any CDF
                # boundary.
                u = torch.rand(b, self.vocab_size, generator=gen, device=self.device)
                gumbel = -torch.log(-torch.log(u.clamp_(min=1e-20)))
                token = (filter_logits(logits.float(), **opts) + gumbel).argmax(dim=-1)
            token = token.masked_fill(done, EOS)  # padding after EOS
            seq[:, t + 1] = token
            done |= token == EOS
            if bool(done.all()):
                steps = t + 1
                break
        seq[:, 1:].masked_fill_(seq[:, 1:] == self.vocab_size, EOS)  # steps never taken
        return seq[:, 1:], steps

    def flops(self, op: str, n_items: int) -> float:
        """FLOPs (Kaplan et al. 2020): per position 2N forward, 6N train, N = ``n_flop_params``.

        One convention everywhere: *positions the network runs*, padding included (rows x
        padded width: what the matmuls cost, whatever the row's real length). N counts the
        block weights and the tied output head but not the embedding look-ups; attention adds
        2 * n_layer * ctx * n_embd per position forward (x3 to train), ctx = block_size.

        - ``fit``: the positions the last fit trained on (all epochs, at the training set's
          padded width) x 6, plus its validation passes x 2 (early stopping only), scaled to
          ``n_items``; before any fit, ``epochs`` x block_size positions per item.
        - ``sample``: the decoding steps the last ``sample`` call ran per row (a batch runs
          until its last row ends) x 2.
        - ``score``: block_size positions per item x 2 (candidates are scored at the full
          width ``sample`` returns).
        """
        c = self.config
        tc = self.train_config
        per_position = self.n_flop_params + c.n_layer * c.block_size * c.n_embd
        if op == "fit":
            if self._fit.items:
                scale = n_items / self._fit.items
                return (6.0 * self._fit.tokens + 2.0 * self._fit.val_tokens) * scale * per_position
            return 6.0 * tc.epochs * n_items * c.block_size * per_position
        if op == "sample":
            return 2.0 * n_items * self._tokens_per_sample * per_position
        if op == "score":
            return 2.0 * n_items * c.block_size * per_position
        raise ValueError(f"op: {op!r} (allowed: fit, sample, score)")

    def summary(self) -> dict[str, float]:
        f = self._fit
        return {"n_params": float(self.n_params), "train_loss": f.train_loss,
                "val_loss": f.val_loss, "epochs_run": f.epochs_run, "steps": float(f.steps),
                "tokens_trained": float(f.tokens)}

    def state_dict(self) -> dict[str, Any]:
        """Weights (CPU tensors) and the last fit's token count; loadable with weights_only."""
        state: dict[str, Any] = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        return {"weights": state, "fit_items": self._fit.items, "fit_tokens": self._fit.tokens,
                "fit_val_tokens": self._fit.val_tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore weights and FLOP bookkeeping; sampling options stay as configured."""
        self.net.load_state_dict({k: v.to(self.device) for k, v in state["weights"].items()})
        self._fit = _FitRecord(items=int(state.get("fit_items", 0)), tokens=int(state.get("fit_tokens", 0)),
                               val_tokens=int(state.get("fit_val_tokens", 0)))


def _phase(name: str) -> contextlib.AbstractContextManager[Any]:
    """A named range in a torch.profiler trace (benchmarks/gpt_utilisation.py splits a
    fit's time by them); a no-op costing one check when no profiler runs."""
    if torch.autograd._profiler_enabled():
        return torch.autograd.profiler.record_function(name)
    return contextlib.nullcontext()


def _train_autocast(device: str) -> contextlib.AbstractContextManager[Any]:
    """Training forward passes in bf16 autocast on a CUDA GPU that has bf16 (matmuls on the
    tensor cores; weights, optimizer state and the loss stay float32); float32 elsewhere:
    on CPU, bf16 would change every result and fp32 matmuls are what the CPU runs best."""
    if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _dropout_rng(enabled: bool, gen: torch.Generator, device: str) -> Iterator[None]:
    """Dropout draws from torch's global RNG (it takes no generator): seed it from ``gen``
    inside a fork that restores the global state afterwards, so fits stay reproducible."""
    if not enabled:
        yield
        return
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        seed = int(torch.randint(2**62, (1,), generator=gen, device=device))
        torch.manual_seed(seed)
        yield


def _lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up, then cosine decay to peak / 10 at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))
