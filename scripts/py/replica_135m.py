"""A realistic-size replica on demand: a random-weight decoder shaped like SmolLM2-135M (offline tool).

Why: everything else weblora measures runs on the 4.7M-parameter default model; load time, memory, the
quantizer and 4-bit decode speed only show their real behaviour at a size users run. No model can be
downloaded here, so this writes one with SmolLM2-135M's shape (30 layers, hidden 576, 9 query / 3 KV heads,
head_dim 64, intermediate 1536, vocab 49152, tied embeddings, rope_theta 100000) and random weights
(model.py's init: N(0, 0.02)) OUTSIDE the repo (~650 MB fp32), then makes onnx/model_q4.onnx with OUR
quantizer (scripts/quantize-model.ts), in one of two layouts (../shared/docs/model-layouts.md):
  --layout optimum (default)  the layout the default model uses (export.py: torch.onnx.export, HF I/O names;
                              the tied embedding ends up twice, Gather + a transposed lm_head copy, as in real
                              Optimum exports); one inline file per dtype.
  --layout builder            the onnxruntime-genai model builder's (replicas.py build_builder: GroupQueryAttention
                              with rotary inside and no position_ids input, packed qkv_proj,
                              SkipSimplifiedLayerNormalization, builder tensor names), every weight in external
                              data as hub repos ship it: onnx/model.onnx + onnx/model.onnx_data, and
                              onnx/model_q4.onnx + onnx/model_q4.onnx_data (the quantizer reads and writes external
                              data; nodes renamed …/MatMul_Q4 as onnxruntime's quantizer names them; no
                              accuracy_level). config.json says `transformers.js_config.use_external_data_format`
                              so transformers.js fetches the data files; no genai_config.json (weblora reads
                              config.json and the graph, not it).
Same seed, same weights in both layouts. The tokenizer is byte-level BPE: the default model's real merges, then
synthetic 2-character merges until the vocabulary is 49152 (loads in @huggingface/tokenizers and transformers.js;
encodes any text; token ids are not SmolLM2's). Not here: trained weights, fp16 files.
    /usr/bin/python3 scripts/py/replica_135m.py                      # -> ~/.cache/weblora/smollm2-135m-replica
    /usr/bin/python3 scripts/py/replica_135m.py --layout builder     # -> ~/.cache/weblora/smollm2-135m-builder-replica
    /usr/bin/python3 scripts/py/replica_135m.py --size tiny --out /tmp/r   # same code, scaled down (smoke test)
    /usr/bin/python3 scripts/py/replica_135m.py --quantize-args "--include-lm-head"   # flags for npm run quantize
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import torch
from onnx import TensorProto

sys.path.insert(0, os.path.dirname(__file__))
import bpe  # noqa: E402
from export import write_package, write_package_json  # noqa: E402
from model import Config, LlamaForCausalLM  # noqa: E402
from replicas import build_builder, rename_q4_nodes  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
DEFAULT_TOKENIZER = os.path.join(REPO, "public/models/weblora-shakespeare/tokenizer.json")
SIZES = {
    # HuggingFaceTB/SmolLM2-135M config.json (shape only)
    "135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                 rms_norm_eps=1e-5, rope_theta=100000.0),
    # the same shape rules at toy size, for the smoke test (tests/unit/scripts/replica.test.ts)
    "tiny": dict(vocab_size=2048, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                 rms_norm_eps=1e-5, rope_theta=100000.0),
}


def extended_merges(vocab_size):
    """The default model's merges, then synthetic merges of two byte-level characters (in byte order,
    skipping strings already in the vocabulary) until 256 bytes + merges + <|endoftext|> = vocab_size."""
    with open(DEFAULT_TOKENIZER) as f:
        base = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in json.load(f)["model"]["merges"]]
    want = vocab_size - 256 - 1
    merges = base[:want]
    have = set(bpe.BYTE_ENC.values()) | {a + b for a, b in merges}
    chars = [bpe.BYTE_ENC[b] for b in range(256)]
    for a in chars:
        for b in chars:
            if len(merges) >= want:
                return merges
            if a + b not in have:
                merges.append((a, b))
                have.add(a + b)
    if len(merges) < want:
        raise SystemExit(f"cannot make {want} merges from 2-character pairs")
    return merges


def file_mb(path):
    """Size of an ONNX file with its external data (<file>_data), in MB."""
    data = path + "_data"
    return (os.path.getsize(path) + (os.path.getsize(data) if os.path.exists(data) else 0)) / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="135m")
    ap.add_argument("--layout", choices=("optimum", "builder"), default="optimum")
    ap.add_argument("--out", help="default ~/.cache/weblora/smollm2-135m-replica (optimum), "
                    "~/.cache/weblora/smollm2-135m-builder-replica (builder)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-quantize", action="store_true", help="write the fp32 file only")
    ap.add_argument("--quantize-args", default="", help="extra flags for scripts/quantize-model.ts")
    args = ap.parse_args()
    builder = args.layout == "builder"
    default = "smollm2-135m-builder-replica" if builder else "smollm2-135m-replica"
    out = os.path.abspath(args.out or os.path.expanduser(f"~/.cache/weblora/{default}"))
    if out == REPO or out.startswith(REPO + os.sep) and args.size == "135m":
        raise SystemExit(f"--out {out} is inside the repository; the 135m replica is ~1 GB, write it elsewhere")

    t0 = time.time()
    cfg = SIZES[args.size]
    tok = bpe.Tokenizer(extended_merges(cfg["vocab_size"]))
    assert tok.vocab_size == cfg["vocab_size"], (tok.vocab_size, cfg["vocab_size"])
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(Config(**cfg)).eval()
    n_params = sum(p.numel() for p in model.parameters())
    meta = {"_name_or_path": f"weblora/smollm2-{args.size}-{'builder-' if builder else ''}replica",
            "weblora_replica": f"random weights (seed {args.seed}) in SmolLM2-135M's shape, {args.layout} layout; "
                               "scripts/py/replica_135m.py"}
    if builder:  # every file of this package has one external-data chunk, <file>_data
        meta["transformers.js_config"] = {"use_external_data_format": True}
    fp32 = os.path.join(out, "onnx", "model.onnx")
    with torch.no_grad():
        if builder:
            write_package_json(out, model, tok, meta)
            build_builder(model, TensorProto.FLOAT, fp32, kv_head_dim=None)  # KV dims [1, 3, past, 64], as base.py
        else:
            write_package(out, model, tok, meta)
    print(f"wrote {fp32}: {n_params / 1e6:.1f}M parameters, {file_mb(fp32):.1f} MB in {time.time() - t0:.0f} s")
    del model
    if not args.no_quantize:
        q4 = os.path.join(out, "onnx", "model_q4.onnx")
        cmd = ["npx", "tsx", "scripts/quantize-model.ts", fp32, q4, *shlex.split(args.quantize_args)]
        subprocess.run(cmd, cwd=REPO, check=True)
        if builder:
            rename_q4_nodes(q4)
    print(f"done in {time.time() - t0:.0f} s: {out}")


if __name__ == "__main__":
    main()
