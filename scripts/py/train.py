"""Pretrain the weblora default model on tinyshakespeare (offline tool; users and CI never run it).

Reproducible: fixed seeds, fixed data split (first 90% of characters train, last 10% validation),
deterministic BPE. Writes a checkpoint (.pt, not committed) that export.py turns into the HF-layout
ONNX package. Run from the repo root:
    OMP_NUM_THREADS=2 /usr/bin/python3 scripts/py/train.py --out /tmp/wl-train
Validation loss is nats per *character*: summed token NLL over the validation text divided by its
character count, scored with strided windows (window 256 tokens, stride 128: every scored token sees
at least 128 tokens of context). scripts/eval-val-loss.ts recomputes it from the ONNX files the same way.
"""
import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
import bpe  # noqa: E402
from model import Config, LlamaForCausalLM  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "../../data/tinyshakespeare.txt")
MODEL_CFG = dict(vocab_size=1024, hidden_size=256, intermediate_size=704, num_hidden_layers=6,
                 num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512)


def load_text():
    with open(DATA, encoding="utf-8") as f:
        text = f.read()
    n = int(len(text) * 0.9)
    return text[:n], text[n:]


def val_windows(n, window=256, stride=128):
    """(start, first scored offset) pairs; shared logic with scripts/eval-val-loss.ts."""
    out = []
    covered = 1  # token 0 has no prediction
    s = 0
    while True:
        s = min(s, max(0, n - window))
        first = max(covered - s, 1)
        out.append((s, first))
        covered = s + window
        if covered >= n:
            return out
        s += stride


def val_nll(model, ids, window=256, stride=128, batch=16):
    model.eval()
    wins = val_windows(len(ids), window, stride)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(wins), batch):
            chunk = wins[i:i + batch]
            x = torch.tensor([ids[s:s + window] for s, _ in chunk])
            logits, _ = model(x)
            lp = torch.log_softmax(logits[:, :-1].float(), -1)
            nll = -lp.gather(-1, x[:, 1:, None])[..., 0]
            for j, (s, first) in enumerate(chunk):
                total += nll[j, first - 1:].sum().item()
                count += window - first
    model.train()
    assert count == len(ids) - 1, (count, len(ids))
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/wl-train")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--stop-at", type=int, default=None,
                    help="stop after this step (evaluating there) while the LR schedule still spans --steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()

    train_text, val_text = load_text()
    merges_path = os.path.join(args.out, "merges.json")
    if os.path.exists(merges_path):
        merges = bpe.load_merges(merges_path)
    else:
        merges = bpe.train(train_text, MODEL_CFG["vocab_size"])
        bpe.save_merges(merges_path, merges)
    tok = bpe.Tokenizer(merges)
    assert tok.vocab_size == MODEL_CFG["vocab_size"], tok.vocab_size
    train_ids = torch.tensor(tok.encode(train_text))
    val_ids = tok.encode(val_text)
    print(f"bpe: {len(merges)} merges, train {len(train_text)} chars -> {len(train_ids)} tokens "
          f"({len(train_text) / len(train_ids):.2f} chars/token); val {len(val_text)} chars -> {len(val_ids)} tokens; "
          f"{time.time() - t0:.1f}s", flush=True)

    cfg = Config(**MODEL_CFG, dropout=args.dropout)
    model = LlamaForCausalLM(cfg)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"params: {nparams}", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(args.seed)
    best = float("inf")
    log = []
    t_train = time.time()
    last = args.steps if args.stop_at is None else min(args.stop_at, args.steps)
    for step in range(last + 1):
        if step % args.eval_every == 0 or step == last:
            nll = val_nll(model, val_ids)
            per_char = nll / (len(val_text) - len(tok.decode(val_ids[:1])))
            el = time.time() - t_train
            print(f"step {step} val {per_char:.4f} nats/char  elapsed {el:.0f}s", flush=True)
            log.append({"step": step, "val_nats_per_char": per_char, "elapsed_s": el})
            if per_char < best:
                best = per_char
                torch.save({"cfg": MODEL_CFG, "state": model.state_dict(), "step": step, "val": per_char},
                           os.path.join(args.out, "best.pt"))
            with open(os.path.join(args.out, "log.json"), "w") as f:
                json.dump({"args": vars(args), "params": nparams, "log": log}, f, indent=1)
        if step == last:
            break
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        if step >= args.warmup:
            prog = (step - args.warmup) / max(1, args.steps - args.warmup)
            lr = args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * prog))
        for gr in opt.param_groups:
            gr["lr"] = lr
        ix = torch.randint(0, len(train_ids) - args.seq - 1, (args.batch,), generator=g)
        x = torch.stack([train_ids[i:i + args.seq] for i in ix])
        y = torch.stack([train_ids[i + 1:i + args.seq + 1] for i in ix])
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} {(time.time() - t_train) / (step + 1):.2f}s/step",
                  flush=True)
    print(f"done: best val {best:.4f} nats/char; train wall {time.time() - t_train:.0f}s; total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
