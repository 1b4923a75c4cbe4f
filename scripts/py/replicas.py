"""Tiny replicas of the ONNX decoder layouts browser users run, each with a PyTorch oracle (offline tool).

No model can be downloaded here, so every layout of ../shared/docs/model-layouts.md is rebuilt at toy size
(2 layers, hidden 64, 4 heads / 2 KV heads, head_dim 16, intermediate 64, vocab 128) from ONE random PyTorch Llama
(scripts/py/model.py), so every layout shares the same weights and the same oracle:
  optimum/model.onnx         torch.onnx.export, HF I/O names, opaque onnx::MatMul_* weights, num_logits_to_keep
  optimum/model_fp16.onnx    the same converted to float16 (weights, activations, KV, logits; int64 I/O kept)
  optimum/model_q4.onnx      our quantizer (scripts/quantize-model.ts), nodes renamed <name>_Q4 as onnxruntime's
  optimum/model_q4f16.onnx   the q4 graph converted to float16 (fp16 scales)
  builder/model.onnx         onnxruntime-genai builder layout (after src/python/py/models/builders/base.py), onnx.helper:
                             GroupQueryAttention (rotary inside, no position_ids; seqlens_k/total_sequence_length from
                             attention_mask), packed qkv_proj, SkipSimplifiedLayerNormalization, weights in
                             model.onnx_data (external data)
  builder-fp16/              the same with fp16 weights, activations, KV and logits
  builder-rope/model.onnx    builder fp32 with RotaryEmbedding nodes and a position_ids input (rotary outside GQA);
                             its tensors point into builder/model.onnx_data (same weights, no second copy)
  builder-qwen/model.onnx    builder fp32 with Qwen2-style q/k/v biases (`/attn/qkv_proj/Add`, inline); other tensors
                             point into builder/model.onnx_data; oracles `qwen*`
  builder-q4/, builder-q4f16/  builder fp32 through our quantizer (nodes …/qkv_proj/MatMul_Q4, no accuracy_level), and
                             that converted to fp16 (the int4 + fp16-I/O build of *-onnx-web repos)
  builder-q4-acc4/model.onnx builder-q4 with accuracy_level=4 (as the builder writes int4 for cpu/webgpu); its tensors
                             point into builder-q4/model.onnx_data
  oracle.safetensors         prompt ids, fp32 logits of the full forward, greedy tokens; the same with the q4
                             weights dequantized (oracle of both q4 files); the same with each adapter merged
  adapter/                   PEFT adapter on q/k/v/o/gate/up/down, r=4, rank_pattern + alpha_pattern
  adapter-phi3/              PEFT adapter in Phi-3's packed module names (qkv_proj, gate_up_proj)
  config.json                HF config of the replica
fp16 oracles are the fp32 ones: CPU PyTorch 1.13 has no fp16 matmul, and fp16 is judged against fp32 anyway.
    /usr/bin/python3 scripts/py/replicas.py --out tests/fixtures/replicas
"""
import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(__file__))
from export import OnnxWrapper  # noqa: E402
from fixtures import write_safetensors  # noqa: E402
from model import TARGETS, Config, LlamaForCausalLM, LoraLinear  # noqa: E402

FORMAT_VERSION = "1"
CFG = dict(vocab_size=128, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, max_position_embeddings=128)
PROMPT_LEN = 8
GREEDY_STEPS = 8
MIN_MARGIN = 0.05  # every oracle's greedy top1-top2 margin (fp16 noise on these logits is ~1e-2)
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
PARENT = {t: ("self_attn" if t in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp") for t in TARGETS}


def make_model(seed):
    torch.manual_seed(seed)
    m = LlamaForCausalLM(Config(**CFG))
    with torch.no_grad():  # larger weights than a fresh init, so logits are peaked (greedy not near ties)
        m.model.embed_tokens.weight.normal_(0.0, 0.5)
        for _, _, lin in m.modules_by_target():
            lin.weight.normal_(0.0, 1.0 / math.sqrt(lin.in_features))
        for layer in m.model.layers:
            layer.input_layernorm.weight.uniform_(0.8, 1.2)
            layer.post_attention_layernorm.weight.uniform_(0.8, 1.2)
    return m.eval()


@torch.no_grad()
def logits_of(model, ids):
    return model(torch.tensor([ids]))[0][0]


@torch.no_grad()
def greedy(model, ids):
    seq, toks, margins = list(ids), [], []
    for _ in range(GREEDY_STEPS):
        top = torch.topk(logits_of(model, seq)[-1], 2)
        toks.append(int(top.indices[0]))
        margins.append(float(top.values[0] - top.values[1]))
        seq.append(toks[-1])
    return toks, margins


# ---------------------------------------------------------------- (a) Optimum-style export

class KeepWrapper(OnnxWrapper):
    """export.py's wrapper plus the optional `num_logits_to_keep` input of newer Optimum exports (0 = all)."""

    def forward(self, input_ids, attention_mask, position_ids, *rest):
        *past_flat, keep = rest
        out = super().forward(input_ids, attention_mask, position_ids, *past_flat)
        return (out[0][:, -keep:, :], *out[1:])


def export_optimum(model, path):
    c = model.c
    L, B, T, P = c.num_hidden_layers, 1, 3, 2
    past = []
    for _ in range(L):
        past += [torch.randn(B, c.num_key_value_heads, P, c.head_dim) for _ in range(2)]
    keep = torch.tensor(0, dtype=torch.int64)
    args = (torch.randint(0, c.vocab_size, (B, T)), torch.ones(B, P + T, dtype=torch.long),
            torch.arange(P, P + T)[None], *past, keep)
    ins = ["input_ids", "attention_mask", "position_ids"]
    outs = ["logits"]
    dyn = {"input_ids": {0: "batch_size", 1: "sequence_length"},
           "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
           "position_ids": {0: "batch_size", 1: "sequence_length"}, "logits": {0: "batch_size", 1: "num_logits"}}
    for i in range(L):
        for kv in ("key", "value"):
            ins.append(f"past_key_values.{i}.{kv}")
            dyn[ins[-1]] = {0: "batch_size", 2: "past_sequence_length"}
            outs.append(f"present.{i}.{kv}")
            dyn[outs[-1]] = {0: "batch_size", 2: "total_sequence_length"}
    ins.append("num_logits_to_keep")
    w = KeepWrapper(c)
    w.load_state_dict(model.state_dict())
    w.eval()
    torch.onnx.export(w, args, path, input_names=ins, output_names=outs, dynamic_axes=dyn, opset_version=17,
                      do_constant_folding=True)


# ---------------------------------------------------------------- (b) float16 conversion

def elem_types(model):
    """Element type of every value the fp32 graph's shape inference knows (inputs, outputs, value_info)."""
    inf = onnx.shape_inference.infer_shapes(model)
    g = inf.graph
    out = {t.name: t.data_type for t in g.initializer}
    for v in list(g.input) + list(g.output) + list(g.value_info):
        out[v.name] = v.type.tensor_type.elem_type
    return out


def fp16_tensor(t):
    a = np.clip(numpy_helper.to_array(t), -65504, 65504).astype(np.float16)
    return numpy_helper.from_array(a, t.name)


def to_fp16(model, types, block=()):
    """fp32 -> fp16 as onnxconverter-common does it: float initializers/constants/casts/I-O become float16
    (int64 I/O untouched); ops in `block` run in fp32 between Casts. `types` from elem_types() of the
    fp32 graph (shape inference does not know com.microsoft ops, so a q4 graph borrows its fp32 twin's)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    F, H = TensorProto.FLOAT, TensorProto.FLOAT16
    for i, t in enumerate(g.initializer):
        if t.data_type == F:
            g.initializer[i].CopyFrom(fp16_tensor(t))
    nodes = []
    for n in g.node:
        for a in n.attribute:
            if n.op_type in ("Constant", "ConstantOfShape") and a.name == "value" and a.t.data_type == F:
                a.t.CopyFrom(fp16_tensor(a.t))
            if n.op_type == "Cast" and a.name == "to" and a.i == F:
                a.i = H
        if n.op_type not in block:
            nodes.append(n)
            continue
        for j, x in enumerate(n.input):
            if x and types.get(x) == F:
                nodes.append(helper.make_node("Cast", [x], [f"{x}_to_fp32_{n.name}"], to=F, name=f"{n.name}/CastIn{j}"))
                n.input[j] = f"{x}_to_fp32_{n.name}"
        outs = list(n.output)
        for j, y in enumerate(outs):
            if y and types.get(y) == F:
                n.output[j] = f"{y}_fp32"
        nodes.append(n)
        for j, y in enumerate(outs):
            if y and types.get(y) == F:
                nodes.append(helper.make_node("Cast", [f"{y}_fp32"], [y], to=H, name=f"{n.name}/CastOut{j}"))
    del g.node[:]
    g.node.extend(nodes)
    for v in list(g.input) + list(g.output):
        if v.type.tensor_type.elem_type == F:
            v.type.tensor_type.elem_type = H
    del g.value_info[:]
    return m


# ---------------------------------------------------------------- (c) q4 via our quantizer

def quantize_q4(src, dst):
    # --no-lm-head: the layout these fixtures were made with (the oracle below dequantizes the 7 projections/layer)
    subprocess.run(["npx", "tsx", "scripts/quantize-model.ts", src, dst, "--no-lm-head"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    return rename_q4_nodes(dst)


def rename_q4_nodes(path):
    """Names every MatMulNBits node <name>_Q4, as onnxruntime's MatMulNBitsQuantizer does, in place; external
    data is neither read nor rewritten (its tensors keep pointing at their file)."""
    m = onnx.load(path, load_external_data=False)
    for n in m.graph.node:
        if n.op_type == "MatMulNBits" and not n.name.endswith("_Q4"):
            n.name += "_Q4"
    onnx.save(m, path)
    return m


def dequantized(q4_model, model):
    """A copy of `model` whose projections hold the q4 graph's dequantized weights (the q4 oracle)."""
    inits = {t.name: numpy_helper.to_array(t) for t in q4_model.graph.initializer}
    out = make_model(0)
    out.load_state_dict(model.state_dict())
    mods = {(i, t): lin for i, t, lin in out.modules_by_target()}
    n_done = 0
    for n in q4_model.graph.node:
        if n.op_type != "MatMulNBits":
            continue
        m = re.search(r"layers\.(\d+)/\w+/(\w+_proj)/", n.name)
        attrs = {a.name: a.i for a in n.attribute}
        K, N, bs = attrs["K"], attrs["N"], attrs["block_size"]
        packed = inits[n.input[1]].reshape(N, -1, bs // 2)
        scales = inits[n.input[2]].astype(np.float32).reshape(N, -1)
        q = np.stack([packed & 15, packed >> 4], axis=-1).reshape(N, -1, bs).astype(np.float32)  # (N, nb, bs)
        w = ((q - 8) * scales[:, :, None]).reshape(N, -1)[:, :K]  # (N, K) = torch Linear layout
        mods[(int(m.group(1)), m.group(2))].weight.data = torch.from_numpy(np.ascontiguousarray(w))
        n_done += 1
    assert n_done == 7 * CFG["num_hidden_layers"], n_done
    return out


# ---------------------------------------------------------------- (d) builder-style graph

def build_builder(model, io_dtype, path, rotary_nodes=False, qkv_bias=None, kv_head_dim="kv_cache_dim"):
    """onnxruntime-genai builder layout (base.py): names, ops and I/O as the builder writes them, for any
    shape `model.c` holds (also replica_135m.py's 135M replica; weights to <path>_data). Rotary is
    fused into GroupQueryAttention (no position_ids input), or with `rotary_nodes` applied by
    com.microsoft.RotaryEmbedding nodes fed by a `position_ids` input (Q/K/V split off the packed output).
    `qkv_bias` ({layer: [out] array}, Qwen2-style) adds `/attn/qkv_proj/Add` after the packed MatMul.
    `kv_head_dim`: the KV I/O's last dimension, a symbol (these fixtures: the loader must take head_dim from
    config.json) or None for the number, as base.py writes it (the 135M replica; transformers.js needs it)."""
    c = model.c
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    npd = np.float16 if io_dtype == TensorProto.FLOAT16 else np.float32
    nh, nkv, hd, H, V = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.hidden_size, c.vocab_size
    inits, nodes = [], []

    def init(name, arr, dtype=None):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr).astype(dtype or npd), name))
        return name

    def node(op, ins, outs, name, domain=None, **kw):
        nodes.append(helper.make_node(op, ins, outs, name=name, domain=domain, **kw))
        return outs[0]

    def matmul(scope, x, w_torch):  # torch Linear weight (out, in) -> MatMul weight (in, out)
        w = init(f"{scope[1:].replace('/', '.')}.MatMul.weight", w_torch.T)
        return node("MatMul", [x, w], [f"{scope}/MatMul/output_0"], f"{scope}/MatMul")

    # attention_mask -> seqlens_k (int32, [B]) and total_sequence_length (int32 scalar), as the builder does
    sub = "/model/attn_mask_reformat/attn_mask_subgraph"
    init(f"{sub}/one", np.array([1], np.int64), np.int64)
    init(f"{sub}/axes", np.array([1], np.int64), np.int64)
    init(f"{sub}/idx1", np.array(1, np.int64), np.int64)
    rs = node("ReduceSum", ["attention_mask", f"{sub}/axes"], [f"{sub}/ReduceSum/output_0"], f"{sub}/ReduceSum",
              keepdims=0)
    sb = node("Sub", [rs, f"{sub}/one"], [f"{sub}/Sub/output_0"], f"{sub}/Sub")
    seqlens = node("Cast", [sb], [f"{sub}/Sub/Cast/output_0"], f"{sub}/Sub/Cast", to=TensorProto.INT32)
    sh = node("Shape", ["attention_mask"], [f"{sub}/Shape/output_0"], f"{sub}/Shape")
    ga = node("Gather", [sh, f"{sub}/idx1"], [f"{sub}/Gather/output_0"], f"{sub}/Gather", axis=0)
    total = node("Cast", [ga], [f"{sub}/Gather/Cast/output_0"], f"{sub}/Gather/Cast", to=TensorProto.INT32)

    pos = np.arange(c.max_position_embeddings, dtype=np.float32)[:, None]
    inv = 1.0 / (c.rope_theta ** (np.arange(0, hd, 2, dtype=np.float32) / hd))
    cos = init("cos_cache", np.cos(pos * inv[None]))  # (max_pos, hd/2)
    sin = init("sin_cache", np.sin(pos * inv[None]))
    emb = init("model.embed_tokens.weight", sd["model.embed_tokens.weight"])
    x = node("Gather", [emb, "input_ids"], ["/model/embed_tokens/Gather/output_0"], "/model/embed_tokens/Gather")
    eps = c.rms_norm_eps
    residual, pending = x, None
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        s = f"/model/layers.{i}"
        w = init(f"{p}input_layernorm.weight", sd[f"{p}input_layernorm.weight"])
        if pending is None:
            h = node("SimplifiedLayerNormalization", [residual, w], [f"{s}/input_layernorm/output_0"],
                     f"{s}/input_layernorm/LayerNorm", axis=-1, epsilon=eps, stash_type=1)
        else:
            h = node("SkipSimplifiedLayerNormalization", [pending, residual, w],
                     [f"{s}/input_layernorm/output_0", "", "", f"{s}/input_layernorm/output_3"],
                     f"{s}/input_layernorm/SkipLayerNorm", domain="com.microsoft", epsilon=eps)
            residual = f"{s}/input_layernorm/output_3"
        wqkv = np.concatenate([sd[f"{p}self_attn.{m}.weight"] for m in ("q_proj", "k_proj", "v_proj")], axis=0)
        qkv = matmul(f"{s}/attn/qkv_proj", h, wqkv)  # rows Q, then K, then V
        if qkv_bias is not None:
            b = init(f"{p[:-1].replace('self_attn', 'attn')}.attn.qkv_proj.Add.bias", qkv_bias[i])
            qkv = node("Add", [qkv, b], [f"{s}/attn/qkv_proj/Add/output_0"], f"{s}/attn/qkv_proj/Add")
        gqa_in = [qkv, "", ""]
        if rotary_nodes:
            split = init(f"{s}/attn/qkv_split", np.array([nh * hd, nkv * hd, nkv * hd], np.int64), np.int64)
            q, k, v = [f"{s}/attn/Split/output_{j}" for j in range(3)]
            node("Split", [qkv, split], [q, k, v], f"{s}/attn/Split", axis=-1)
            q = node("RotaryEmbedding", [q, "position_ids", cos, sin], [f"{s}/attn/q_rotary/output_0"],
                     f"{s}/attn/q_rotary/RotaryEmbedding", domain="com.microsoft", interleaved=0, num_heads=nh)
            k = node("RotaryEmbedding", [k, "position_ids", cos, sin], [f"{s}/attn/k_rotary/output_0"],
                     f"{s}/attn/k_rotary/RotaryEmbedding", domain="com.microsoft", interleaved=0, num_heads=nkv)
            gqa_in = [q, k, v]
        att = node("GroupQueryAttention",
                   [*gqa_in, f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens, total,
                    *(("", "") if rotary_nodes else (cos, sin))],
                   [f"{s}/attn/GroupQueryAttention/output_0", f"present.{i}.key", f"present.{i}.value"],
                   f"{s}/attn/GroupQueryAttention", domain="com.microsoft", num_heads=nh, kv_num_heads=nkv,
                   do_rotary=0 if rotary_nodes else 1, rotary_interleaved=0, local_window_size=-1,
                   scale=1.0 / math.sqrt(hd))
        o = matmul(f"{s}/attn/o_proj", att, sd[f"{p}self_attn.o_proj.weight"])
        w = init(f"{p}post_attention_layernorm.weight", sd[f"{p}post_attention_layernorm.weight"])
        h = node("SkipSimplifiedLayerNormalization", [o, residual, w],
                 [f"{s}/post_attention_layernorm/output_0", "", "", f"{s}/post_attention_layernorm/output_3"],
                 f"{s}/post_attention_layernorm/SkipLayerNorm", domain="com.microsoft", epsilon=eps)
        residual = f"{s}/post_attention_layernorm/output_3"
        gate = matmul(f"{s}/mlp/gate_proj", h, sd[f"{p}mlp.gate_proj.weight"])
        up = matmul(f"{s}/mlp/up_proj", h, sd[f"{p}mlp.up_proj.weight"])
        sg = node("Sigmoid", [gate], [f"{s}/mlp/act_fn/Sigmoid/output_0"], f"{s}/mlp/act_fn/Sigmoid")
        act = node("Mul", [gate, sg], [f"{s}/mlp/act_fn/Mul/output_0"], f"{s}/mlp/act_fn/Mul")
        mul = node("Mul", [act, up], [f"{s}/mlp/Mul/output_0"], f"{s}/mlp/Mul")
        pending = matmul(f"{s}/mlp/down_proj", mul, sd[f"{p}mlp.down_proj.weight"])
    s = f"/model/layers.{c.num_hidden_layers}/final_norm_layernorm"
    w = init("model.norm.weight", sd["model.norm.weight"])
    h = node("SkipSimplifiedLayerNormalization", [pending, residual, w], [f"{s}/output_0", "", "", f"{s}/output_3"],
             f"{s}/SkipLayerNorm", domain="com.microsoft", epsilon=eps)
    lm = init("lm_head.MatMul.weight", sd["model.embed_tokens.weight"].T)
    node("MatMul", [h, lm], ["logits"], "/lm_head/MatMul")

    kv_dim = hd if kv_head_dim is None else kv_head_dim
    kv_shape = ["batch_size", nkv, "past_sequence_length", kv_dim]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                            ["batch_size", "total_sequence_length"])]
    if rotary_nodes:
        inputs.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64,
                                                    ["batch_size", "sequence_length"]))
    outputs = [helper.make_tensor_value_info("logits", io_dtype, ["batch_size", "sequence_length", V])]
    for i in range(c.num_hidden_layers):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kv}", io_dtype, kv_shape))
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{kv}", io_dtype, ["batch_size", nkv, "total_sequence_length", kv_dim]))
    graph = helper.make_graph(nodes, "main_graph", inputs, outputs, inits)
    inits.clear()  # make_graph and make_model copy the tensors: keep one copy alive at a time (135M: 650 MB each)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                          producer_name="onnxruntime-genai (weblora replica)")
    del graph
    m.ir_version = 8
    if rotary_nodes or qkv_bias is not None:
        share_external(m, os.path.join(os.path.dirname(os.path.dirname(path)), "builder", "model.onnx"), path)
    else:
        save_external(m, path)


def share_external(m, ref_path, path):
    """Point every tensor that `ref_path` holds in external data at the same bytes (same names, same
    weights), keep the rest inline: a graph variant without a second copy of the weights."""
    ref = onnx.load(ref_path, load_external_data=False)
    ext = {t.name: t for t in ref.graph.initializer if t.data_location == TensorProto.EXTERNAL}
    for t in m.graph.initializer:
        r = ext.get(t.name)
        if r is not None and list(r.dims) == list(t.dims) and r.data_type == t.data_type:
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            t.external_data.extend(r.external_data)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(m, path)


def save_external(m, path):
    """Every tensor in `<file>_data` (the builder's model.onnx.data, renamed to the hub's .onnx_data)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = os.path.basename(path) + "_data"
    if os.path.exists(os.path.join(os.path.dirname(path), data)):
        os.remove(os.path.join(os.path.dirname(path), data))
    onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                    size_threshold=64)  # int64 shape constants stay inline (ORT reads them at load)


def builder_q4(out):
    """builder/ through our quantizer (the builder quantizes after building too), then to fp16 (q4f16)."""
    tmp, tmp_q4 = os.path.join(out, "_builder.onnx"), os.path.join(out, "_builder_q4.onnx")
    onnx.save(onnx.load(os.path.join(out, "builder", "model.onnx")), tmp)  # external data inlined
    q = quantize_q4(tmp, tmp_q4)
    os.remove(tmp)
    os.remove(tmp_q4)
    q16 = to_fp16(q, {})  # before save_external, which moves q's tensors out
    acc4 = onnx.ModelProto()
    acc4.CopyFrom(q)
    for n in acc4.graph.node:  # what the builder sets for cpu/webgpu int4: int8 activations in the kernels
        if n.op_type == "MatMulNBits":
            n.attribute.append(helper.make_attribute("accuracy_level", 4))
    save_external(q, os.path.join(out, "builder-q4", "model.onnx"))
    save_external(q16, os.path.join(out, "builder-q4f16", "model.onnx"))
    share_external(acc4, os.path.join(out, "builder-q4", "model.onnx"), os.path.join(out, "builder-q4-acc4", "model.onnx"))


# ---------------------------------------------------------------- adapters and their merged oracles

def pattern_value(patterns, key, default):
    for k, v in patterns.items():
        if re.match(rf"(.*\.)?({k})$", key):
            return v
    return default


def peft_config(targets, **kw):
    cfg = {"alpha_pattern": {}, "base_model_name_or_path": "weblora/replica", "bias": "none",
           "fan_in_fan_out": False, "inference_mode": True, "layers_pattern": None, "layers_to_transform": None,
           "lora_alpha": 8, "lora_dropout": 0.0, "modules_to_save": None, "peft_type": "LORA", "r": 4,
           "rank_pattern": {}, "target_modules": list(targets), "task_type": "CAUSAL_LM", "use_dora": False,
           "use_rslora": False}
    cfg.update(kw)
    return cfg


def make_adapter(cfg, shapes, gen):
    """{PEFT module path: (A [r, in], B [out, r], scale)}; `shapes`: module path -> (in, out)."""
    out = {}
    for path, (fin, fout) in shapes.items():
        r = pattern_value(cfg["rank_pattern"], path, cfg["r"])
        alpha = pattern_value(cfg["alpha_pattern"], path, cfg["lora_alpha"])
        a = torch.randn(r, fin, generator=gen) / math.sqrt(fin)
        b = torch.randn(fout, r, generator=gen) * 0.3
        out[path] = (a, b, alpha / r)
    return out


def write_adapter(folder, cfg, adapter):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    t = {}
    for path, (a, b, _) in adapter.items():
        t[f"base_model.model.{path}.lora_A.weight"] = a.contiguous()
        t[f"base_model.model.{path}.lora_B.weight"] = b.contiguous()
    write_safetensors(os.path.join(folder, "adapter_model.safetensors"), t, {"format_version": FORMAT_VERSION})


def merged(model, deltas):
    """A copy of `model` with W += delta per (layer, module): the merged-weights oracle."""
    out = make_model(0)
    out.load_state_dict(model.state_dict())
    with torch.no_grad():
        for i, t, lin in out.modules_by_target():
            if (i, t) in deltas:
                lin.weight += deltas[(i, t)]
    return out


def with_bias(model, biases):
    """`model` (already merged, if at all) with Qwen2-style q/k/v biases: {(layer, module): [out]}."""
    for i, t, lin in model.modules_by_target():
        if (i, t) in biases:
            lin.forward = (lambda lin, b: lambda x: LoraLinear.forward(lin, x) + b)(lin, biases[(i, t)])
    return model


def split_deltas(adapter, nh_out, nkv_out, inter):
    """Per (layer, module) weight deltas s·B·A; Phi-3's packed qkv_proj / gate_up_proj split by rows."""
    d = {}
    for path, (a, b, s) in adapter.items():
        i = int(re.search(r"layers\.(\d+)\.", path).group(1))
        mod = path.rsplit(".", 1)[1]
        full = s * (b @ a)
        if mod == "qkv_proj":
            q, k, v = torch.split(full, [nh_out, nkv_out, nkv_out], dim=0)
            d[(i, "q_proj")], d[(i, "k_proj")], d[(i, "v_proj")] = q, k, v
        elif mod == "gate_up_proj":
            d[(i, "gate_proj")], d[(i, "up_proj")] = torch.split(full, [inter, inter], dim=0)
        else:
            d[(i, mod)] = full
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/replicas")
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = os.path.abspath(args.out)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "optimum"))
    model = make_model(0)
    c = model.c
    nh_out, nkv_out = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim

    # (a) Optimum fp32, (c) q4 via our quantizer, and the q4 oracle (dequantized weights)
    opt = os.path.join(out, "optimum")
    export_optimum(model, os.path.join(opt, "model.onnx"))
    fp32 = onnx.load(os.path.join(opt, "model.onnx"))
    types = elem_types(fp32)
    q4 = quantize_q4(os.path.join(opt, "model.onnx"), os.path.join(opt, "model_q4.onnx"))
    model_q4 = dequantized(q4, model)
    # (b) fp16 / q4f16
    onnx.save(to_fp16(fp32, types), os.path.join(opt, "model_fp16.onnx"))
    onnx.save(to_fp16(q4, types), os.path.join(opt, "model_q4f16.onnx"))
    # (d) builder
    build_builder(model, TensorProto.FLOAT, os.path.join(out, "builder", "model.onnx"))
    build_builder(model, TensorProto.FLOAT16, os.path.join(out, "builder-fp16", "model.onnx"))
    build_builder(model, TensorProto.FLOAT, os.path.join(out, "builder-rope", "model.onnx"), rotary_nodes=True)
    bgen = torch.Generator().manual_seed(2)
    biases = {}
    for i, t, lin in model.modules_by_target():
        if t in ("q_proj", "k_proj", "v_proj"):
            biases[(i, t)] = torch.randn(lin.out_features, generator=bgen) * 0.5
    qkv_bias = {i: torch.cat([biases[(i, m)] for m in ("q_proj", "k_proj", "v_proj")]).numpy()
                for i in range(c.num_hidden_layers)}
    build_builder(model, TensorProto.FLOAT, os.path.join(out, "builder-qwen", "model.onnx"), qkv_bias=qkv_bias)
    builder_q4(out)  # packed Q/K/V columns quantize exactly as the separate ones: the q4 oracle holds

    # adapters
    gen = torch.Generator().manual_seed(1)
    shapes = {}
    for i, t, lin in model.modules_by_target():
        shapes[f"model.layers.{i}.{PARENT[t]}.{t}"] = (lin.in_features, lin.out_features)
    cfg = peft_config(TARGETS, rank_pattern={"v_proj": 2, "model.layers.1.mlp.down_proj": 6},
                      alpha_pattern={"o_proj": 4})
    adapter = make_adapter(cfg, shapes, gen)
    write_adapter(os.path.join(out, "adapter"), cfg, adapter)
    phi_shapes = {}
    for i in range(c.num_hidden_layers):
        phi_shapes[f"model.layers.{i}.self_attn.qkv_proj"] = (c.hidden_size, nh_out + 2 * nkv_out)
        phi_shapes[f"model.layers.{i}.mlp.gate_up_proj"] = (c.hidden_size, 2 * c.intermediate_size)
    phi_cfg = peft_config(["qkv_proj", "gate_up_proj"], r=4, rank_pattern={"gate_up_proj": 2})
    phi = make_adapter(phi_cfg, phi_shapes, gen)
    write_adapter(os.path.join(out, "adapter-phi3"), phi_cfg, phi)

    # prompt: the first seed whose greedy continuations all have margins >= MIN_MARGIN
    variants = {
        "base": model,
        "q4": model_q4,
        "lora": merged(model, split_deltas(adapter, nh_out, nkv_out, c.intermediate_size)),
        "q4_lora": merged(model_q4, split_deltas(adapter, nh_out, nkv_out, c.intermediate_size)),
        "phi3": merged(model, split_deltas(phi, nh_out, nkv_out, c.intermediate_size)),
        "q4_phi3": merged(model_q4, split_deltas(phi, nh_out, nkv_out, c.intermediate_size)),
        "qwen": with_bias(merged(model, {}), biases),
        "qwen_lora": with_bias(merged(model, split_deltas(adapter, nh_out, nkv_out, c.intermediate_size)), biases),
        "qwen_phi3": with_bias(merged(model, split_deltas(phi, nh_out, nkv_out, c.intermediate_size)), biases),
    }
    for seed in range(200):
        g = torch.Generator().manual_seed(1000 + seed)
        ids = torch.randint(0, c.vocab_size, (PROMPT_LEN,), generator=g).tolist()
        res = {k: greedy(m, ids) for k, m in variants.items()}
        if all(min(mg) >= MIN_MARGIN for _, mg in res.values()):
            break
    else:
        raise SystemExit("no prompt with all greedy margins >= MIN_MARGIN")
    tensors = {"input_ids": torch.tensor(ids, dtype=torch.int32)}
    meta = {"format_version": FORMAT_VERSION, "torch": torch.__version__, "prompt_seed": seed,
            "min_margin": min(min(mg) for _, mg in res.values())}
    for k, m in variants.items():
        tensors[f"logits_{k}"] = logits_of(m, ids).contiguous()
        tensors[f"greedy_{k}"] = torch.tensor(res[k][0], dtype=torch.int32)
        meta[f"margin_{k}"] = min(res[k][1])
    write_safetensors(os.path.join(out, "oracle.safetensors"), tensors, meta)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": c.vocab_size,
              "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
              "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
              "num_key_value_heads": c.num_key_value_heads, "head_dim": c.head_dim,
              "max_position_embeddings": c.max_position_embeddings, "rms_norm_eps": c.rms_norm_eps,
              "rope_theta": c.rope_theta, "hidden_act": "silu", "tie_word_embeddings": True,
              "bos_token_id": 0, "eos_token_id": 0, "torch_dtype": "float32"}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    total = 0
    for root, _, files in os.walk(out):
        for fn in sorted(files):
            sz = os.path.getsize(os.path.join(root, fn))
            total += sz
            print(f"{os.path.relpath(os.path.join(root, fn), out):40s} {sz:>9,d}")
    print(f"{'total':40s} {total:>9,d}   prompt seed {seed}, min greedy margin {meta['min_margin']:.3f}")


if __name__ == "__main__":
    main()
