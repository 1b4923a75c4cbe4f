// injectLora(): target discovery on the exported default model and on hand-built graphs (MatMul, Gemm
// transB with bias, Transpose-fed named weights, MatMulNBits), exact rank-0 behaviour, the hand-computed
// effect of a rank-2 adapter with both branch operators (MatMul and Einsum), typed errors, and
// pass-through of external-data initializers.
import { describe, expect, it } from 'vitest';
import {
  AmbiguousTargetError,
  ModelFormatError,
  NoTargetsError,
  UnknownTargetError,
} from '../../../src/errors.ts';
import {
  injectLora,
  LORA_MODULES,
  LORA_RANK_DIM,
  type LoraBranchOp,
  type LoraModule,
  type LoraTarget,
  loraBranchOpFor,
  loraInputName,
} from '../../../src/model/inject-lora.ts';
import {
  decodeModel,
  encodeModel,
  graphOf,
  initializersOf,
  inputsOf,
  type ModelProto,
  nodesOf,
  onnx,
} from '../../../src/model/onnx-io.ts';
import { quantize } from '../../../src/model/quantize.ts';
import { expectClose, SAME_GRAPH } from '../../helpers/expect-close.ts';
import { MODEL_DIMS } from '../adapters/model-targets.ts';
import {
  defaultModelFeeds,
  type Feeds,
  f32,
  loadDefaultBytes,
  matmulRef,
  randn,
  runModel,
  type TinyGraph,
  tinyModel,
} from './graph-builders.ts';

/** Rank-0 adapters for every target: A (in, 0), B (0, out). */
function rankZero(targets: LoraTarget[]): Feeds {
  const f: Feeds = {};
  for (const t of targets) {
    f[t.inputA] = f32(new Float32Array(0), [t.in, 0]);
    f[t.inputB] = f32(new Float32Array(0), [0, t.out]);
  }
  return f;
}

/** One projection Y = X·W (K=8 -> N=6) with the given naming, plus a Relu consumer so Y is internal. */
function oneProjection(opts: {
  node?: string;
  weight: string;
  kind: 'MatMul' | 'Gemm' | 'Transpose';
}): TinyGraph {
  const K = 8;
  const N = 6;
  const node = opts.node ?? 'anon';
  if (opts.kind === 'Gemm') {
    return {
      nodes: [
        { op: 'Gemm', inputs: ['X', opts.weight, 'bias'], outputs: ['Y'], name: node, attrs: { transB: 1 } },
        { op: 'Relu', inputs: ['Y'], outputs: ['Z'] },
      ],
      inputs: [{ name: 'X', dims: [2, K] }],
      outputs: [{ name: 'Z', dims: [2, N] }],
      inits: [
        { name: opts.weight, dims: [N, K], data: randn(N * K, 3) }, // (out, in), transB
        { name: 'bias', dims: [N], data: randn(N, 4) },
      ],
    };
  }
  const transposed = opts.kind === 'Transpose';
  return {
    nodes: [
      ...(transposed ? [{ op: 'Transpose', inputs: [opts.weight], outputs: ['Wt'], attrs: {} }] : []),
      { op: 'MatMul', inputs: ['X', transposed ? 'Wt' : opts.weight], outputs: ['Y'], name: node },
      { op: 'Relu', inputs: ['Y'], outputs: ['Z'] },
    ],
    inputs: [{ name: 'X', dims: [2, K] }],
    outputs: [{ name: 'Z', dims: [2, N] }],
    inits: [{ name: opts.weight, dims: transposed ? [N, K] : [K, N], data: randn(N * K, 3) }],
  };
}

/** The equation attribute of an Einsum node. */
function equationOf(n: { attribute?: { name?: string | null; s?: Uint8Array | null }[] | null }): string {
  const a = (n.attribute ?? []).find((x) => x.name === 'equation');
  return new TextDecoder().decode(a?.s ?? new Uint8Array());
}

const BRANCH_OPS: LoraBranchOp[] = ['matmul', 'einsum'];

/** Runs base and injected graphs with a random rank-2 adapter; checks injected = base-pre-Relu + (X·A)·B. */
async function checkRank2(base: ModelProto, K = 8, N = 6): Promise<void> {
  for (const branchOp of BRANCH_OPS) await checkRank2With(base, branchOp, K, N);
}

async function checkRank2With(base: ModelProto, branchOp: LoraBranchOp, K: number, N: number): Promise<void> {
  const { model, targets } = injectLora(base, { branchOp });
  const branch = nodesOf(graphOf(model)).filter((n) => n.name?.startsWith('/lora.'));
  if (branchOp === 'einsum') {
    // X is declared (2, K) in these graphs: the equations follow that rank.
    expect(branch.map((n) => [n.opType, equationOf(n)])).toEqual([
      ['Einsum', 'ai,ir->ar'],
      ['Einsum', 'ar,ro->ao'],
      ['Add', ''],
    ]);
  } else {
    expect(branch.map((n) => n.opType)).toEqual(['MatMul', 'MatMul', 'Add']);
  }
  expect(targets).toHaveLength(1);
  const t = targets[0]!;
  expect([t.in, t.out]).toEqual([K, N]);
  const R = 2;
  const X = randn(2 * K, 21); // (2, K)
  const A = randn(K * R, 22); // (K, R)
  const B = randn(R * N, 23); // (R, N)
  // Expose the pre-activation Y of both graphs to compare before the Relu.
  const exposeY = (m: ModelProto) => {
    const g = onnx.GraphProto.create({ ...graphOf(m) });
    g.output = [...g.output, onnx.ValueInfoProto.create({ name: 'Y' })];
    return onnx.ModelProto.create({ ...m, graph: g });
  };
  const yBase = (await runModel(exposeY(base), { X: f32(X, [2, K]) })).Y!;
  const feeds = { X: f32(X, [2, K]), [t.inputA]: f32(A, [K, R]), [t.inputB]: f32(B, [R, N]) };
  const yLora = (await runModel(exposeY(model), feeds)).Y!;
  const delta = matmulRef(matmulRef(X, A, 2, K, R), B, 2, R, N); // (2, N)
  expectClose(
    yLora.map((v, i) => v - yBase[i]!),
    delta,
    { atol: 1e-5, rtol: 1e-5 },
    `injected (${branchOp}) - base`,
  );
  const zero = (await runModel(exposeY(model), { X: f32(X, [2, K]), ...rankZero(targets) })).Y!;
  expect(Array.from(zero)).toEqual(Array.from(yBase)); // rank 0: Y + 0, bit-exact
}

describe('injectLora on the default model', () => {
  const bytes = loadDefaultBytes();
  const tokens = [1023, 5, 17, 300, 42, 9, 77, 512];

  it('finds the 42 projections with the right shapes, sorted by (layer, module)', () => {
    const base = decodeModel(bytes);
    const nodesBefore = nodesOf(graphOf(base)).length;
    const { model, targets } = injectLora(base);
    expect(targets).toHaveLength(42);
    targets.forEach((t, i) => {
      expect(t.layer).toBe(Math.floor(i / 7));
      expect(t.module).toBe(LORA_MODULES[i % 7]);
      expect([t.in, t.out]).toEqual(MODEL_DIMS[t.module as LoraModule]);
      expect(t.inputA).toBe(loraInputName(t.layer, t.module, 'A'));
      expect(t.node).toMatch(new RegExp(`^/model/layers\\.${t.layer}/(self_attn|mlp)/${t.module}/MatMul$`));
    });
    expect(loraInputName(0, 'q_proj', 'A')).toBe('lora.0.q_proj.A');
    const a = inputsOf(graphOf(model)).find((x) => x.name === 'lora.5.down_proj.A')!;
    const dims = a.type!.tensorType!.shape!.dim!;
    expect([Number(dims[0]!.dimValue), dims[1]!.dimParam]).toEqual([704, LORA_RANK_DIM]);
    expect(nodesOf(graphOf(model)).length).toBe(nodesBefore + 3 * 42);
    expect(nodesOf(graphOf(base)).length).toBe(nodesBefore); // input model untouched
    // No weight copies: the injected graph shares the very same TensorProto objects.
    expect(initializersOf(graphOf(model))).toEqual(initializersOf(graphOf(base)));
    expect(initializersOf(graphOf(model))[3]).toBe(initializersOf(graphOf(base))[3]);
  });

  it('rank 0 reproduces the base logits; a rank-2 adapter on one target changes them', async () => {
    const base = decodeModel(bytes);
    const { model, targets } = injectLora(base);
    const feeds = defaultModelFeeds(tokens);
    const ref = await runModel(base, feeds);
    const got = await runModel(decodeModel(encodeModel(model)), { ...feeds, ...rankZero(targets) });
    expectClose(got.logits!, ref.logits!, SAME_GRAPH, 'rank-0 logits');
    expectClose(got['present.5.value']!, ref['present.5.value']!, SAME_GRAPH, 'rank-0 present.5.value');

    const f = rankZero(targets);
    f['lora.2.v_proj.A'] = f32(randn(256 * 2, 1, 0.1), [256, 2]);
    f['lora.2.v_proj.B'] = f32(randn(2 * 128, 2, 0.1), [2, 128]);
    const moved = (await runModel(model, { ...feeds, ...f })).logits!;
    let d = 0;
    for (let i = 0; i < moved.length; i++) d = Math.max(d, Math.abs(moved[i]! - ref.logits![i]!));
    expect(d).toBeGreaterThan(1e-4);
  });

  it("branchOp 'einsum' computes what 'matmul' does (rank 4 on all 42 targets, q4 graph)", async () => {
    const q = quantize(decodeModel(bytes)).model;
    const mm = injectLora(q, { branchOp: 'matmul' });
    const es = injectLora(q, { branchOp: 'einsum' });
    expect(es.targets).toEqual(mm.targets);
    const einsums = nodesOf(graphOf(es.model)).filter((n) => n.opType === 'Einsum');
    expect(einsums).toHaveLength(2 * 42);
    // The exported graph declares no rank for the projection inputs: decoder activations are 3-D.
    expect(new Set(einsums.map(equationOf))).toEqual(new Set(['abi,ir->abr', 'abr,ro->abo']));
    expect(nodesOf(graphOf(es.model)).some((n) => n.name?.endsWith('/MatMul_A'))).toBe(false);

    const R = 4;
    const f: Feeds = {};
    mm.targets.forEach((t, i) => {
      f[t.inputA] = f32(randn(t.in * R, 100 + i, 0.1), [t.in, R]);
      f[t.inputB] = f32(randn(R * t.out, 200 + i, 0.1), [R, t.out]);
    });
    const feeds = { ...defaultModelFeeds(tokens), ...f };
    const ref = (await runModel(q, defaultModelFeeds(tokens))).logits!;
    const a = (await runModel(decodeModel(encodeModel(mm.model)), feeds)).logits!;
    const b = (await runModel(decodeModel(encodeModel(es.model)), feeds)).logits!;
    expectClose(b, a, SAME_GRAPH, 'einsum vs matmul logits');
    let d = 0;
    for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - ref[i]!));
    expect(d).toBeGreaterThan(1e-2); // the adapter really moved the logits
    expect(loraBranchOpFor('webgpu')).toBe('einsum');
    expect(loraBranchOpFor('wasm')).toBe('matmul');
  });

  it('works on the 4-bit (MatMulNBits) graph; options select a subset', async () => {
    const q = quantize(decodeModel(bytes)).model;
    const { model, targets } = injectLora(q);
    expect(targets).toHaveLength(42);
    for (const t of targets) expect([t.in, t.out]).toEqual(MODEL_DIMS[t.module as LoraModule]);
    const feeds = defaultModelFeeds(tokens);
    const ref = (await runModel(q, feeds)).logits!;
    const got = (await runModel(model, { ...feeds, ...rankZero(targets) })).logits!;
    expectClose(got, ref, SAME_GRAPH, 'q4 rank-0 logits');

    const sub = injectLora(q, { targets: ['v_proj', 'q_proj'], layers: [2, 0] }).targets;
    expect(sub.map((t) => `${t.layer}.${t.module}`)).toEqual([
      '0.q_proj',
      '0.v_proj',
      '2.q_proj',
      '2.v_proj',
    ]);
  });
});

describe('injectLora on hand-built graphs: the rank-2 delta equals (X·A)·B', () => {
  it('MatMul with an anonymous weight, named by torch scope', async () => {
    await checkRank2(
      tinyModel(
        oneProjection({
          kind: 'MatMul',
          node: '/model/layers.0/self_attn/q_proj/MatMul',
          weight: 'onnx::MatMul_7',
        }),
      ),
    );
  });
  it('Gemm transB=1 with bias and an HF-named weight', async () => {
    await checkRank2(
      tinyModel(oneProjection({ kind: 'Gemm', weight: 'model.layers.0.self_attn.q_proj.weight' })),
    );
  });
  it('MatMul fed by Transpose of an HF-named [out, in] weight', async () => {
    await checkRank2(
      tinyModel(oneProjection({ kind: 'Transpose', weight: 'model.layers.3.mlp.up_proj.weight' })),
    );
  });
  it('MatMul with an HF-named [in, out] weight', async () => {
    const m = tinyModel(oneProjection({ kind: 'MatMul', weight: 'model.layers.0.mlp.down_proj.weight' }));
    expect(injectLora(m).targets[0]).toMatchObject({
      layer: 0,
      module: 'down_proj',
      in: 8,
      out: 6,
      node: 'anon',
    });
    await checkRank2(m);
  });
  it('com.microsoft.MatMulNBits (K, N from attributes)', async () => {
    const K = 64;
    const N = 6;
    const g = oneProjection({ kind: 'MatMul', node: '/model/layers.1/mlp/gate_proj/MatMul', weight: 'W' });
    g.inputs = [{ name: 'X', dims: [2, K] }];
    g.inits = [{ name: 'W', dims: [K, N], data: randn(K * N, 9) }];
    const q = quantize(tinyModel(g)).model;
    expect(nodesOf(graphOf(q))[0]!.opType).toBe('MatMulNBits');
    await checkRank2(q, K, N);
  });
});

describe('injectLora errors', () => {
  const base = () =>
    tinyModel(
      oneProjection({ kind: 'MatMul', node: '/model/layers.0/self_attn/q_proj/MatMul', weight: 'W' }),
    );

  it('no recognisable projections -> NoTargetsError naming what it found', () => {
    const m = tinyModel(oneProjection({ kind: 'MatMul', node: '/encoder/dense/MatMul', weight: 'W' }));
    expect(() => injectLora(m)).toThrow(NoTargetsError);
    expect(() => injectLora(m)).toThrow(
      /q_proj.*found 1 MatMul\/Gemm with constant weights: \/encoder\/dense\/MatMul/s,
    );
  });

  it('unknown modules or layers -> UnknownTargetError listing what exists', () => {
    expect(() => injectLora(base(), { targets: ['q_proj', 'foo_proj'] })).toThrow(UnknownTargetError);
    expect(() => injectLora(base(), { targets: ['q_proj', 'foo_proj'] })).toThrow(
      /foo_proj.*this graph has q_proj/,
    );
    expect(() => injectLora(base(), { targets: ['v_proj'] })).toThrow(/v_proj/); // valid name, absent here
    expect(() => injectLora(base(), { layers: [99] })).toThrow(UnknownTargetError);
    expect(() => injectLora(base(), { layers: [99] })).toThrow(/99.*layers 0/);
  });

  it('two nodes for one (layer, module) -> AmbiguousTargetError', () => {
    const g = oneProjection({ kind: 'MatMul', node: '/model/layers.0/self_attn/q_proj/MatMul', weight: 'W' });
    g.nodes.push({
      op: 'MatMul',
      inputs: ['X', 'W'],
      outputs: ['Y2'],
      name: '/model/layers.0/self_attn/q_proj/MatMul_1',
    });
    g.outputs.push({ name: 'Y2', dims: [2, 6] });
    expect(() => injectLora(tinyModel(g))).toThrow(AmbiguousTargetError);
    expect(() => injectLora(tinyModel(g))).toThrow(/q_proj\/MatMul' and '.*q_proj\/MatMul_1'/);
  });

  it("branchOp: unknown names and 'einsum' below opset 12 -> ModelFormatError", () => {
    expect(() => injectLora(base(), { branchOp: 'conv' as LoraBranchOp })).toThrow(ModelFormatError);
    expect(() => injectLora(base(), { branchOp: 'conv' as LoraBranchOp })).toThrow(
      /unknown LoRA branchOp 'conv'/,
    );
    const old = base();
    old.opsetImport = [onnx.OperatorSetIdProto.create({ domain: '', version: 11 })];
    expect(() => injectLora(old, { branchOp: 'einsum' })).toThrow(ModelFormatError);
    expect(() => injectLora(old, { branchOp: 'einsum' })).toThrow(/opset >= 12.*opset 11/);
    expect(injectLora(old, { branchOp: 'matmul' }).targets).toHaveLength(1);
  });

  it('branchDtype / packed: unknown values -> ModelFormatError naming the choices', () => {
    expect(() => injectLora(base(), { branchDtype: 'bf16' as 'float16' })).toThrow(ModelFormatError);
    expect(() => injectLora(base(), { branchDtype: 'bf16' as 'float16' })).toThrow(
      /unknown LoRA branchDtype 'bf16'; expected 'float32' or 'float16'/,
    );
    expect(() => injectLora(base(), { packed: 'split' as 'per-part' })).toThrow(
      /unknown packed LoRA mode 'split'; expected 'block-diagonal' or 'per-part'/,
    );
  });

  it('injecting twice -> ModelFormatError', () => {
    const once = injectLora(base()).model;
    expect(() => injectLora(once)).toThrow(ModelFormatError);
    expect(() => injectLora(decodeModel(encodeModel(once)))).toThrow(/already has LoRA inputs/);
  });
});

describe('external data', () => {
  it('an EXTERNAL initializer survives injectLora + encode unchanged (and quantize skips it)', () => {
    const ext = onnx.TensorProto.fromObject({
      name: 'model.layers.0.self_attn.k_proj.weight',
      dataType: 1,
      dims: [6, 8],
      dataLocation: 1,
      externalData: [
        { key: 'location', value: 'model.onnx_data' },
        { key: 'offset', value: '4096' },
        { key: 'length', value: '192' },
      ],
    });
    const g = oneProjection({ kind: 'MatMul', node: '/model/layers.0/self_attn/q_proj/MatMul', weight: 'W' });
    g.nodes.push({ op: 'Gemm', inputs: ['X', ext.name], outputs: ['K'], name: 'k', attrs: { transB: 1 } });
    g.outputs.push({ name: 'K', dims: [2, 6] });
    g.raw = [ext];
    const m = tinyModel(g);
    const before = onnx.TensorProto.encode(
      initializersOf(graphOf(m)).find((t) => t.name === ext.name)!,
    ).finish();

    const { model, targets } = injectLora(m);
    expect(targets.map((t) => [t.module, t.in, t.out])).toEqual([
      ['q_proj', 8, 6],
      ['k_proj', 8, 6],
    ]);
    const after = initializersOf(graphOf(decodeModel(encodeModel(model)))).find((t) => t.name === ext.name)!;
    expect(Buffer.from(onnx.TensorProto.encode(after).finish()).equals(Buffer.from(before))).toBe(true);
    expect(after.dataLocation).toBe(1);
    expect(after.rawData.byteLength).toBe(0);

    const gemmOnly = tinyModel({ ...g, nodes: g.nodes.slice(0, 2).map((n) => ({ ...n })) });
    expect(quantize(gemmOnly).report.skipped).toEqual([]); // plain weight: quantized
    const extMatMul = tinyModel({
      nodes: [{ op: 'MatMul', inputs: ['X', ext.name], outputs: ['Y'], name: 'm' }],
      inputs: [{ name: 'X', dims: [2, 6] }],
      outputs: [{ name: 'Y', dims: [2, 8] }],
      raw: [ext],
    });
    expect(quantize(extMatMul).report.skipped).toEqual([
      { node: 'm', reason: expect.stringMatching(/external data/) },
    ]);
  });
});
