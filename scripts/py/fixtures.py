"""Golden fixtures from an independent implementation (PyTorch) for the TypeScript/ONNX/WebGPU paths.

Writes small safetensors files under tests/fixtures/ (see tests/fixtures/README.md for every key):
  golden.safetensors            3 token sequences, fp32 logits (base model and under both adapters),
                                20-token greedy continuations with their top-1 margins
  peft-adapter/                 a PEFT LoRA adapter (r=4, alpha=8, rank_pattern), exact PEFT layout
  peft-adapter-rslora/          a second one (rsLoRA, alpha_pattern, subset of targets and layers)
  lora-grads.safetensors        loss and d loss / d lora_{A,B} of peft-adapter on a fixed batch (fp64 math)
  adamw-trajectory.safetensors  10 AdamW steps from peft-adapter on that batch: losses + final weights
Every file's __metadata__ has format_version, the torch version and the sha256 of the model.onnx it was
made for, so tests can say "fixtures are stale" instead of failing on numbers.
The script refuses to run when model.onnx was not exported from --ckpt (embed_tokens compared).
safetensors is written by hand (struct + json): no safetensors package here. Offline tool only:
    /usr/bin/python3 scripts/py/fixtures.py --ckpt /tmp/wl-train/best.pt \
        --model-dir public/models/weblora-shakespeare --out tests/fixtures
"""
import argparse
import hashlib
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import bpe  # noqa: E402
from model import TARGETS, Config, LlamaForCausalLM  # noqa: E402

FORMAT_VERSION = "1"
DATA = os.path.join(os.path.dirname(__file__), "../../data/tinyshakespeare.txt")
# Three slots of (token count, candidate texts). For each slot the first candidate whose 20-step greedy
# continuation has every top1-top2 logit margin >= MIN_MARGIN is used, so that fp32 noise between
# implementations (~1e-5) cannot flip an expected token; the choice is recorded in the metadata.
PROMPTS = [
    (7, ["ROMEO:\nBut soft, what light", "JULIET:\nO Romeo, Romeo!", "HAMLET:\nTo be, or not to be",
         "KING LEAR:\nBlow, winds, and crack", "MACBETH:\nIs this a dagger which I see",
         "PORTIA:\nThe quality of mercy is not strain'd", "BRUTUS:\nRomans, countrymen, and lovers!",
         "OTHELLO:\nIt is the cause, it is the cause"]),
    (16, ["First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.",
          "MENENIUS:\nWhy, masters, my good friends, mine honest neighbours,\nWill you undo yourselves?",
          "GLOUCESTER:\nNow is the winter of our discontent\nMade glorious summer by this sun of York;",
          "DUKE VINCENTIO:\nBe absolute for death; either death or life\nShall thereby be the sweeter.",
          "ISABELLA:\nCould great men thunder\nAs Jove himself does, Jove would ne'er be quiet,",
          "PROSPERO:\nOur revels now are ended. These our actors,\nAs I foretold you, were all spirits"]),
    (33, ["KING RICHARD II:\nWe are amazed; and thus long have we stood\nTo watch the fearful bending of thy knee,\n"
          "Because we thought ourself thy lawful king.",
          "JOHN OF GAUNT:\nThis royal throne of kings, this scepter'd isle,\nThis earth of majesty, this seat of Mars,\n"
          "This other Eden, demi-paradise,\nThis fortress built by Nature for herself",
          "QUEEN MARGARET:\nSo now prosperity begins to mellow\nAnd drop into the rotten mouth of death.\n"
          "Here in these confines slily have I lurk'd,",
          "ROMEO:\nHe jests at scars that never felt a wound.\nBut, soft! what light through yonder window breaks?\n"
          "It is the east, and Juliet is the sun.",
          "CLARENCE:\nO, I have pass'd a miserable night,\nSo full of ugly sights, of ghastly dreams,\n"
          "That, as I am a Christian faithful man,",
          "LADY ANNE:\nSet down, set down your honourable load,\nIf honour may be shrouded in a hearse,\n"
          "Whilst I awhile obsequiously lament"]),
]
MIN_MARGIN = 3e-3
TARGET_RMS = 0.3  # RMS change of the logits an adapter fixture causes on seq2 (visible, not chaotic)
GREEDY_STEPS = 20
BATCH_OFFSETS = (200_000, 800_000)  # character offsets into tinyshakespeare for the 2-row training batch
BATCH_T = 32
ADAMW = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
ADAMW_STEPS = 10
SUBSPACE = "base_model.model."
MODULE_PARENT = {t: ("self_attn" if t in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp") for t in TARGETS}

DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int32: "I32", torch.int64: "I64"}


def write_safetensors(path, tensors, metadata):
    """Same canonical layout as src/adapters/safetensors.ts writeSafetensors (so TS round trips are
    byte-exact): compact JSON, __metadata__ first, tensors ordered by element size descending then name,
    header padded with spaces to 8-byte alignment (as the Rust crate does)."""
    header, blobs, off = {"__metadata__": {k: str(v) for k, v in metadata.items()}}, [], 0
    for name in sorted(tensors, key=lambda k: (-tensors[k].element_size(), k)):
        t = tensors[name].contiguous()
        raw = t.numpy().tobytes()  # little-endian on every machine we run on
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return os.path.getsize(path)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def module_path(layer, target):
    return f"model.layers.{layer}.{MODULE_PARENT[target]}.{target}"


def pattern_value(patterns, key, default):
    """PEFT's get_pattern_key: the first pattern key k (insertion order) with re.match(rf"(.*\\.)?({k})$", key)."""
    import re
    for k, v in patterns.items():
        if re.match(rf"(.*\.)?({k})$", key):
            return v
    return default


def make_adapter(model, cfg, gen, b_std):
    """Random PEFT adapter: {module path: (A [r, in], B [out, r])} for every covered module, fp32."""
    out = {}
    layers = cfg["layers_to_transform"]
    for i, t, lin in model.modules_by_target():
        if t not in cfg["target_modules"] or (layers is not None and i not in layers):
            continue
        key = module_path(i, t)
        r = pattern_value(cfg["rank_pattern"], key, cfg["r"])
        a = torch.randn(r, lin.in_features, generator=gen) / math.sqrt(lin.in_features)
        b = torch.randn(lin.out_features, r, generator=gen) * b_std
        out[key] = (a, b)
    return out


def scales(cfg, adapter):
    s = {}
    for key, (a, _) in adapter.items():
        r = a.shape[0]
        alpha = pattern_value(cfg["alpha_pattern"], key, cfg["lora_alpha"])
        s[key] = alpha / math.sqrt(r) if cfg["use_rslora"] else alpha / r
    return s


def attach(model, cfg, adapter, dtype=torch.float32):
    sc = scales(cfg, adapter)
    for i, t, lin in model.modules_by_target():
        key = module_path(i, t)
        lin.lora = (adapter[key][0].to(dtype), adapter[key][1].to(dtype), sc[key]) if key in adapter else None


def peft_tensors(adapter):
    d = {}
    for key, (a, b) in adapter.items():
        d[f"{SUBSPACE}{key}.lora_A.weight"] = a.float().contiguous()
        d[f"{SUBSPACE}{key}.lora_B.weight"] = b.float().contiguous()
    return d


def peft_config(base_model, **kw):
    cfg = {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": base_model, "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True, "layer_replication": None,
        "layers_pattern": None, "layers_to_transform": None, "loftq_config": {}, "lora_alpha": 8,
        "lora_dropout": 0.0, "megatron_config": None, "megatron_core": "megatron.core", "modules_to_save": None,
        "peft_type": "LORA", "r": 4, "rank_pattern": {}, "revision": None, "target_modules": list(TARGETS),
        "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": False,
    }
    cfg.update(kw)
    return cfg


@torch.no_grad()
def logits_of(model, ids):
    lg, _ = model(torch.tensor([ids]))
    return lg[0]


@torch.no_grad()
def greedy(model, ids):
    """Full recompute each step (independent of any KV-cache logic). Returns tokens and top1-top2 margins."""
    seq, toks, margins = list(ids), [], []
    for _ in range(GREEDY_STEPS):
        lg = logits_of(model, seq)[-1]
        top = torch.topk(lg, 2)
        toks.append(int(top.indices[0]))
        margins.append(float(top.values[0] - top.values[1]))
        seq.append(toks[-1])
    return toks, margins


def batch_loss(model, batch):
    lg, _ = model(batch)
    V = lg.shape[-1]
    return F.cross_entropy(lg[:, :-1].reshape(-1, V), batch[:, 1:].reshape(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--model-dir", default="public/models/weblora-shakespeare")
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    onnx_path = os.path.join(args.model_dir, "onnx", "model.onnx")
    model_sha = sha256(onnx_path)
    ck = torch.load(args.ckpt, map_location="cpu")
    model = LlamaForCausalLM(Config(**ck["cfg"]))
    model.load_state_dict(ck["state"])
    model.eval()
    try:  # refuse to write fixtures for a model.onnx exported from another checkpoint
        import onnx
        from onnx import numpy_helper
        init = {t.name: t for t in onnx.load(onnx_path).graph.initializer}
        emb = torch.from_numpy(numpy_helper.to_array(init["model.embed_tokens.weight"]).copy())
        if not torch.equal(emb, model.model.embed_tokens.weight.detach()):
            sys.exit(f"{onnx_path} was not exported from {args.ckpt} (embed_tokens differ); re-export first")
    except ImportError:
        print("warning: python onnx not installed; not checking that model.onnx matches the checkpoint")

    with open(os.path.join(args.model_dir, "tokenizer.json")) as f:
        tok = bpe.Tokenizer([tuple(m) for m in json.load(f)["model"]["merges"]])
    meta = {"format_version": FORMAT_VERSION, "torch_version": torch.__version__, "model_sha256": model_sha,
            "model_config": json.dumps(ck["cfg"], sort_keys=True),
            "generator": "scripts/py/fixtures.py"}
    base_name = os.path.basename(os.path.normpath(args.model_dir))

    golden, sizes, chosen = {}, {}, []
    min_margin = float("inf")
    for j, (n, texts) in enumerate(PROMPTS):
        best = None
        for text in texts:
            ids = tok.encode(text)
            assert len(ids) >= n, (text, len(ids))
            ids = ids[:n]
            toks, margins = greedy(model, ids)
            if best is None or min(margins) > min(best[2]):
                best = (ids, toks, margins, text)
            if min(margins) >= MIN_MARGIN:
                break
        ids, toks, margins, text = best
        if min(margins) < MIN_MARGIN:
            print(f"warning: slot {j}: best greedy margin {min(margins):.3g} < {MIN_MARGIN}; an exact-token "
                  "check may flip on fp32 noise. Add candidate prompts.")
        chosen.append(text)
        golden[f"seq{j}.tokens"] = torch.tensor(ids, dtype=torch.int32)
        golden[f"base.seq{j}.logits"] = logits_of(model, ids).float()
        golden[f"base.seq{j}.greedy"] = torch.tensor(toks, dtype=torch.int32)
        golden[f"base.seq{j}.greedy_margin"] = torch.tensor(margins, dtype=torch.float32)
        min_margin = min(min_margin, min(margins))
        print(f"seq{j}: {len(ids)} tokens {tok.decode(ids)!r} -> {tok.decode(toks)!r} (min margin {min(margins):.4g})")
    seqs = [golden[f"seq{j}.tokens"].tolist() for j in range(len(PROMPTS))]

    # Adapters. B is scaled so the adapter moves logits visibly (RMS change TARGET_RMS on seq2) on any base.
    adapters = {
        "peft-adapter": (peft_config(base_name, r=4, lora_alpha=8,
                                     rank_pattern={"model.layers.1.mlp.down_proj": 2}), 1),
        "peft-adapter-rslora": (peft_config(base_name, r=8, lora_alpha=16, use_rslora=True,
                                            target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
                                            layers_to_transform=[0, 2, 3, 5], layers_pattern="layers",
                                            rank_pattern={"layers.3.self_attn.o_proj": 3},
                                            alpha_pattern={"v_proj": 4, "model.layers.5.mlp.down_proj": 40}), 2),
    }
    made = {}
    for name, (cfg, seed) in adapters.items():
        gen = torch.Generator().manual_seed(seed)
        ad = make_adapter(model, cfg, gen, 1.0)
        for _ in range(6):  # rescale B (a few fixed-point steps: the response is not linear)
            attach(model, cfg, ad)
            d = logits_of(model, seqs[2]) - golden["base.seq2.logits"]
            rms = float(d.pow(2).mean().sqrt())
            ad = {k: (a, b * (TARGET_RMS / rms)) for k, (a, b) in ad.items()}
        attach(model, cfg, ad)
        for j, ids in enumerate(seqs):
            golden[f"{name}.seq{j}.logits"] = logits_of(model, ids).float()
        d = golden[f"{name}.seq2.logits"] - golden["base.seq2.logits"]
        print(f"{name}: logits change rms {float(d.pow(2).mean().sqrt()):.3g}, max {float(d.abs().max()):.3g}")
        attach(model, cfg, {})
        folder = os.path.join(args.out, name)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "adapter_config.json"), "w") as f:
            json.dump(cfg, f, indent=2)  # key order kept: pattern keys are order-sensitive
            f.write("\n")
        sizes[name] = write_safetensors(os.path.join(folder, "adapter_model.safetensors"), peft_tensors(ad),
                                        dict(meta, format="pt"))
        made[name] = (cfg, ad)

    gmeta = dict(meta, greedy_steps=str(GREEDY_STEPS), min_greedy_margin=f"{min_margin:.6g}",
                 prompts=json.dumps(chosen), min_margin_required=str(MIN_MARGIN))
    sizes["golden"] = write_safetensors(os.path.join(args.out, "golden.safetensors"), golden, gmeta)

    # Gradients and an AdamW trajectory, in float64 (the reference; fp32 engines compare with a tolerance).
    with open(DATA, encoding="utf-8") as f:
        text = f.read()
    rows = []
    for off in BATCH_OFFSETS:
        ids = tok.encode(text[off:off + 400])
        assert len(ids) >= BATCH_T
        rows.append(ids[:BATCH_T])
    batch = torch.tensor(rows, dtype=torch.int64)
    cfg, ad = made["peft-adapter"]
    m64 = LlamaForCausalLM(Config(**ck["cfg"]))
    m64.load_state_dict(ck["state"])
    m64.eval().double()
    params = {k: (a.double().clone().requires_grad_(True), b.double().clone().requires_grad_(True))
              for k, (a, b) in ad.items()}
    attach(m64, cfg, params, torch.float64)
    loss = batch_loss(m64, batch)
    loss.backward()
    grads = {"batch": batch.to(torch.int32), "loss": torch.tensor([loss.item()], dtype=torch.float32)}
    for key, (a, b) in params.items():
        grads[f"{SUBSPACE}{key}.lora_A.weight"] = a.grad.float()
        grads[f"{SUBSPACE}{key}.lora_B.weight"] = b.grad.float()
    loss_def = "mean next-token cross-entropy: logits[:, :-1] vs batch[:, 1:], over B*(T-1) positions"
    sizes["lora-grads"] = write_safetensors(
        os.path.join(args.out, "lora-grads.safetensors"), grads,
        dict(meta, adapter="peft-adapter", loss=loss_def, loss_f64=repr(loss.item()), math="float64",
             batch_offsets=json.dumps(BATCH_OFFSETS)))
    print(f"loss {loss.item():.6f}")

    flat = [p for ab in params.values() for p in ab]
    for p in flat:
        p.grad = None
    opt = torch.optim.AdamW(flat, **ADAMW)
    losses = []
    for _ in range(ADAMW_STEPS):
        opt.zero_grad()
        loss = batch_loss(m64, batch)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    with torch.no_grad():
        losses.append(batch_loss(m64, batch).item())
    traj = {"batch": batch.to(torch.int32), "losses": torch.tensor(losses, dtype=torch.float32)}
    for key, (a, b) in params.items():
        traj[f"{SUBSPACE}{key}.lora_A.weight"] = a.detach().float()
        traj[f"{SUBSPACE}{key}.lora_B.weight"] = b.detach().float()
    sizes["adamw-trajectory"] = write_safetensors(
        os.path.join(args.out, "adamw-trajectory.safetensors"), traj,
        dict(meta, adapter="peft-adapter", loss=loss_def, math="float64", steps=str(ADAMW_STEPS),
             lr=str(ADAMW["lr"]), beta1=str(ADAMW["betas"][0]), beta2=str(ADAMW["betas"][1]),
             eps=str(ADAMW["eps"]), weight_decay=str(ADAMW["weight_decay"]),
             losses_f64=json.dumps(losses),
             losses_meaning="losses[k] = loss after k optimizer steps (k = 0..steps); weights after all steps"))
    print("losses", " ".join(f"{x:.5f}" for x in losses))
    print("sizes", json.dumps(sizes), "total", sum(sizes.values()))


if __name__ == "__main__":
    main()
