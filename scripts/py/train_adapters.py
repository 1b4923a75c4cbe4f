"""Train the example LoRA adapters shipped in public/adapters/ (offline PyTorch tool).

Until weblora's WebGPU trainer lands, the example adapters are trained here, on the frozen default
model, from data this script derives from the training split of tinyshakespeare (first 90%):
  shout    - continuation in upper case: prefix kept, continuation upper-cased, loss on the continuation
  romeo    - one character's voice: only ROMEO's speeches, so continuations are spoken by ROMEO
  reverse  - every line's word order reversed
Each is saved in exact PEFT format (adapter_config.json + adapter_model.safetensors; r=8, alpha=16,
all 7 projections) and scored by a behaviour metric on greedy continuations, base vs adapter.
    OMP_NUM_THREADS=2 /usr/bin/python3 scripts/py/train_adapters.py --ckpt /tmp/wl-train/best.pt
"""
import argparse
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import bpe  # noqa: E402
from fixtures import module_path, peft_config, peft_tensors, write_safetensors  # noqa: E402
from model import Config, LlamaForCausalLM  # noqa: E402
from train import load_text  # noqa: E402

R, ALPHA = 8, 16
PROMPTS = ["First Citizen:\nWe are accounted poor citizens, the patricians good.\n",
           "KING RICHARD III:\nNow is the winter of our discontent\n",
           "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n",
           "MENENIUS:\nWhat work's, my countrymen, in hand? where go you\n"]
SPEAKER = re.compile(r"^([A-Z][A-Za-z ]+):$", re.M)
WORD = re.compile(r"[A-Za-z']+")


def reverse_line(line):
    if SPEAKER.match(line) or not line.strip():
        return line
    return " ".join(reversed(line.split()))


def speeches(text, who):
    blocks = text.split("\n\n")
    return [b for b in blocks if b.startswith(who + ":\n")]


def make_sampler(kind, train_text, tok, seq, rng):
    """Returns a function producing (ids, loss_mask) pairs of length seq+1 for the given behaviour."""
    if kind == "romeo":
        corpus = "\n\n".join(speeches(train_text, "ROMEO")) + "\n\n"
        ids = tok.encode(corpus)
        print(f"romeo: {corpus.count('ROMEO:')} speeches, {len(ids)} tokens")

        def sample():
            i = rng.randrange(0, len(ids) - seq - 1)
            return ids[i:i + seq + 1], [1] * (seq + 1)
        return sample
    if kind == "reverse":
        corpus = "\n".join(reverse_line(ln) for ln in train_text.split("\n"))
        ids = tok.encode(corpus)

        def sample():
            i = rng.randrange(0, len(ids) - seq - 1)
            return ids[i:i + seq + 1], [1] * (seq + 1)
        return sample
    if kind == "shout":
        def sample():
            while True:
                i = rng.randrange(0, len(train_text) - 4 * seq)
                chunk = train_text[i:i + 4 * seq]
                cut = chunk.find("\n", rng.randrange(20, 2 * seq))
                if cut < 0:
                    continue
                pre, post = tok.encode(chunk[:cut + 1]), tok.encode(chunk[cut + 1:].upper())
                ids = (pre + post)[: seq + 1]
                if len(ids) == seq + 1 and len(pre) < seq:
                    return ids, [0] * len(pre) + [1] * (seq + 1 - len(pre))
        return sample
    raise ValueError(kind)


def metric(kind, text, bigrams):
    letters = [c for c in text if c.isalpha()]
    if kind == "shout":
        return sum(c.isupper() for c in letters) / max(1, len(letters)), "upper-case share of letters"
    if kind == "romeo":
        tags = SPEAKER.findall(text)
        return (sum(t == "ROMEO" for t in tags) / len(tags)) if tags else 0.0, "share of speaker tags = ROMEO"
    words = [w.lower() for w in WORD.findall(text)]
    fwd = rev = 0
    for a, b in zip(words, words[1:]):
        f, r = bigrams.get((a, b), 0), bigrams.get((b, a), 0)
        if f != r:
            fwd += f > r
            rev += r > f
    return rev / max(1, fwd + rev), "share of word pairs more common reversed in the corpus"


@torch.no_grad()
def greedy(model, ids, n):
    seq = list(ids)
    for _ in range(n):
        lg, _ = model(torch.tensor([seq[-256:]]))
        seq.append(int(lg[0, -1].argmax()))
    return seq[len(ids):]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="/tmp/wl-train/best.pt")
    ap.add_argument("--merges", default="/tmp/wl-train/merges.json")
    ap.add_argument("--out", default="public/adapters")
    ap.add_argument("--only", default="shout,romeo,reverse")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = bpe.Tokenizer(bpe.load_merges(args.merges))
    ck = torch.load(args.ckpt)
    train_text, _ = load_text()
    words = [w.lower() for w in WORD.findall(train_text)]
    bigrams = Counter(zip(words, words[1:]))
    summary = {}
    for kind in args.only.split(","):
        torch.manual_seed(1234)
        rng = random.Random(1234)
        model = LlamaForCausalLM(Config(**ck["cfg"]))
        model.load_state_dict(ck["state"])
        model.eval()  # dropout off; base frozen
        for p in model.parameters():
            p.requires_grad_(False)
        params, adapter = [], {}
        scale = ALPHA / R
        for i, t, lin in model.modules_by_target():
            a = torch.empty(R, lin.in_features)
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # PEFT's default init
            a = torch.nn.Parameter(a)
            b = torch.nn.Parameter(torch.zeros(lin.out_features, R))
            lin.lora = (a, b, scale)
            adapter[module_path(i, t)] = (a, b)
            params += [a, b]
        opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
        sample = make_sampler(kind, train_text, tok, args.seq, rng)
        t0 = time.time()
        for step in range(args.steps):
            lr = args.lr * min(1.0, (step + 1) / 20) * (0.5 * (1 + math.cos(math.pi * step / args.steps)))
            for g in opt.param_groups:
                g["lr"] = lr
            batch = [sample() for _ in range(args.batch)]
            x = torch.tensor([b[0] for b in batch])
            m = torch.tensor([b[1] for b in batch], dtype=torch.float32)[:, 1:]
            lg, _ = model(x[:, :-1])
            nll = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
            loss = (nll * m.reshape(-1)).sum() / m.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 50 == 0 or step == args.steps - 1:
                print(f"{kind} step {step} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
        train_s = time.time() - t0
        # score: greedy 120-token continuations of fixed prompts, adapter vs base
        scores = {}
        for label in ("adapter", "base"):
            if label == "base":
                for _, _, lin in model.modules_by_target():
                    lin.lora = None
            text = "".join(tok.decode(greedy(model, tok.encode(p), 120)) for p in PROMPTS)
            scores[label] = metric(kind, text, bigrams)[0]
            scores[label + "_sample"] = text[:300]
        name = f"weblora-{kind}"
        out = os.path.join(args.out, name)
        os.makedirs(out, exist_ok=True)
        cfg = peft_config("weblora-shakespeare", r=R, lora_alpha=ALPHA)
        with open(os.path.join(out, "adapter_config.json"), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
        write_safetensors(os.path.join(out, "adapter_model.safetensors"),
                          peft_tensors({k: (a.detach(), b.detach()) for k, (a, b) in adapter.items()}),
                          {"format": "pt"})
        summary[name] = {"metric": metric(kind, "", bigrams)[1], "adapter": scores["adapter"], "base": scores["base"],
                         "final_loss": loss.item(), "train_s": round(train_s), "steps": args.steps,
                         "adapter_sample": scores["adapter_sample"], "base_sample": scores["base_sample"]}
        print(json.dumps(summary[name], indent=1), flush=True)
    path = os.path.join(args.out, "metrics.json")
    merged = {}
    if os.path.exists(path):  # keep the entries of adapters not retrained in this run
        with open(path) as f:
            merged = json.load(f)
    merged.update(summary)
    with open(path, "w") as f:
        json.dump(merged, f, indent=1)


if __name__ == "__main__":
    main()
