// The decoder fusion (src/model/fuse-decoder.ts, fuse-rotary.ts) on onnxruntime-web's WebGPU EP (SwiftShader
// here), where its kernels (SimplifiedLayerNormalization, com.microsoft SkipSimplifiedLayerNormalization and
// RotaryEmbedding, the grouped Einsum / Transpose+MatMul attention) run as WGSL; the wasm side is
// tests/unit/model/fuse-decoder.test.ts. Oracles:
// - the unfused graph on the same EP: default model q4, prompt logits and 4 KV-cached steps within FUSED_WEBGPU,
//   8 greedy tokens identical (the engine's einsum-matmul form, and the 'einsum' and 'matmul' forms once);
// - the unfused LoRA-injected graph (loraInjectOptionsFor('webgpu')) with a random rank-8 adapter: the fusion
//   composes with injectLora;
// - the PyTorch oracle: the Optimum replicas fused, then injected: 8 greedy tokens, logits (base, and with the
//   PEFT adapter vs its merged oracle) within the replica's own wasm bound (rep.tol: FP32_LOGITS for fp32/q4),
//   tighter than replicas-webgpu.test.ts's WEBGPU_REPLICA: the fused graph reads exact cos/sin caches instead
//   of SwiftShader's approximate WGSL Cos/Sin (unfused 1.6e-3 from the oracle, fused 7.6e-6; the run prints it).
// fp16 replicas need `shader-f16`; without it they run anyway, must fail with an f16 error, and are skipped with
// that error (as in replicas-webgpu.test.ts).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomLoraFeeds } from '../../bench/random-lora.ts';
import { peftToFeeds } from '../../src/adapters/peft.ts';
import { noAdapterFeeds } from '../../src/engine/load.ts';
import {
  createDecoderSession,
  type DecoderGraph,
  greedy,
  KvStepper,
  type Ort,
  type OrtTensor,
} from '../../src/engine/session.ts';
import { type FuseOptions, fuseDecoder, fuseOptionsFor } from '../../src/model/fuse-decoder.ts';
import { toHalfBits } from '../../src/model/half.ts';
import { injectLora, type LoraTarget, loraInjectOptionsFor } from '../../src/model/inject-lora.ts';
import { decodeModel, encodeModel, type ModelProto } from '../../src/model/onnx-io.ts';
import { type ModelConfig, parseModelConfig } from '../../src/model/package.ts';
import { expectClose, FUSED_WEBGPU, maxAbsDiff } from '../helpers/expect-close.ts';
import {
  loadReplicaSet,
  oracleGreedy,
  oracleLogits,
  promptLogits,
  REPLICAS,
  type ReplicaSet,
} from '../helpers/replicas.ts';
import { MODEL_BASE, setupOrt } from './helpers/model.ts';

const ort = setupOrt() as unknown as Ort;
const PROMPT = [5, 71, 300, 12, 999, 64, 7, 128, 511, 3, 42, 800];
const STEPS = [17, 400, 2, 900];
const GREEDY = 8;
const measured: string[] = [];

afterAll(() => {
  console.info(`fusion on webgpu, max |diff|:\n${measured.join('\n')}`);
});

const session = (m: ModelProto, cfg: ModelConfig): Promise<DecoderGraph> =>
  createDecoderSession(ort, encodeModel(m), cfg, { backend: 'webgpu' });

/** Prompt logits (last row), then 4 cached single-token steps with fixed ids: one row each. */
async function trace(graph: DecoderGraph, feeds?: Record<string, OrtTensor>): Promise<Float32Array[]> {
  const st = new KvStepper(ort, graph, feeds);
  try {
    const rows = [await st.step(PROMPT)];
    for (const id of STEPS) rows.push(await st.step([id]));
    return rows;
  } finally {
    st.dispose();
  }
}

function expectTraceClose(got: Float32Array[], want: Float32Array[], what: string): number {
  expect(got.length).toBe(want.length);
  let worst = 0;
  for (const [i, row] of want.entries()) {
    expectClose(got[i]!, row, FUSED_WEBGPU, `${what}, ${i === 0 ? 'prompt' : `step ${i}`}`);
    worst = Math.max(worst, maxAbsDiff(got[i]!, row));
  }
  return worst;
}

describe('fused default model q4 on webgpu vs the unfused graph', () => {
  let config: ModelConfig;
  let decoded: ModelProto;
  let unfused: DecoderGraph;
  let unfusedTrace: Float32Array[];
  let unfusedGreedy: number[];
  const released: DecoderGraph[] = [];
  beforeAll(async () => {
    config = parseModelConfig(await (await fetch(`${MODEL_BASE}config.json`)).json());
    decoded = decodeModel(
      new Uint8Array(await (await fetch(`${MODEL_BASE}onnx/model_q4.onnx`)).arrayBuffer()),
    );
    unfused = await session(decoded, config);
    released.push(unfused);
    unfusedTrace = await trace(unfused);
    unfusedGreedy = await greedy(ort, unfused, PROMPT, GREEDY);
  });
  afterAll(async () => {
    for (const g of released) await g.session.release();
  });

  const forms: [string, FuseOptions][] = [
    ["fuseOptionsFor('webgpu') (einsum scores, matmul mix)", fuseOptionsFor('webgpu')],
    ["attention 'einsum'", { ...fuseOptionsFor('webgpu'), attention: 'einsum' }],
    ["attention 'matmul'", { ...fuseOptionsFor('webgpu'), attention: 'matmul' }],
  ];
  for (const [name, opts] of forms) {
    it(`${name}: every site fused; prompt + 4 cached steps within FUSED_WEBGPU; ${GREEDY} greedy tokens equal`, async () => {
      const { model, report } = fuseDecoder(decoded, config, opts);
      expect(report).toEqual({ norms: 13, skipNorms: 12, rotary: 12, attention: 6, scaleFolds: 6 });
      const g = await session(model, config);
      released.push(g);
      const worst = expectTraceClose(await trace(g), unfusedTrace, name);
      expect(await greedy(ort, g, PROMPT, GREEDY)).toEqual(unfusedGreedy);
      measured.push(`  default q4, ${name}: ${worst.toExponential(1)}`);
    });
  }

  it('LoRA-injected (webgpu options) fused graph with a random rank-8 adapter = the unfused injected graph', async () => {
    const inject = (m: ModelProto) => injectLora(m, loraInjectOptionsFor('webgpu'));
    const plain = inject(decoded);
    const fusedInj = inject(fuseDecoder(decoded, config, fuseOptionsFor('webgpu')).model);
    const key = (ts: LoraTarget[]) => ts.map((t) => `${t.inputA} ${t.in}x${t.out}`);
    expect(key(fusedInj.targets)).toEqual(key(plain.targets)); // same targets, same feeds fit both
    const [a, b] = [await session(plain.model, config), await session(fusedInj.model, config)];
    released.push(a, b);
    const lora = randomLoraFeeds(ort, plain.targets, 8, 7);
    const want = await trace(a, lora);
    const worst = expectTraceClose(await trace(b, lora), want, 'injected + random adapter');
    // The adapter really is applied: it moves the logits far beyond the tolerance.
    expect(maxAbsDiff(want[0]!, unfusedTrace[0]!)).toBeGreaterThan(0.1);
    expect(await greedy(ort, b, PROMPT, GREEDY, { extraFeeds: lora })).toEqual(
      await greedy(ort, a, PROMPT, GREEDY, { extraFeeds: lora }),
    );
    measured.push(
      `  default q4 injected + random adapter: ${worst.toExponential(1)} (adapter effect ${maxAbsDiff(want[0]!, unfusedTrace[0]!).toExponential(1)})`,
    );
  });
});

describe('fused Optimum replicas on webgpu vs the PyTorch oracle', () => {
  const BASE = '/tests/fixtures/replicas/';
  const read = async (p: string) => {
    const r = await fetch(BASE + p);
    expect(r.ok, `fetch ${p}`).toBe(true);
    return new Uint8Array(await r.arrayBuffer());
  };
  let set: ReplicaSet;
  let hasF16 = false;
  beforeAll(async () => {
    set = await loadReplicaSet(read);
    hasF16 = (await navigator.gpu.requestAdapter())?.features.has('shader-f16') ?? false;
  });

  it.for(REPLICAS.filter((r) => r.layout === 'optimum'))('$name', async (rep, ctx) => {
    const { model, report } = fuseDecoder(
      decodeModel(await read(rep.file)),
      set.config,
      fuseOptionsFor('webgpu'),
    );
    // 2 layers: 5 norms (4 after a residual), Q and K rotary per layer, 2 attentions.
    expect(report).toEqual({ norms: 5, skipNorms: 4, rotary: 4, attention: 2, scaleFolds: 2 });
    const inj = injectLora(model, loraInjectOptionsFor('webgpu'));
    const g = await session(inj.model, set.config);
    const device = (await ort.env.webgpu.device) as GPUDevice;
    const none = noAdapterFeeds(ort, inj.targets, device);
    try {
      // fp16 without shader-f16: the failure is the expected, measured outcome; anything else is a bug.
      const base = await promptLogits(ort, g, set.prompt, none.feeds).catch((e: unknown) => {
        if (!rep.f16 || hasF16) throw e;
        const failure = String((e as Error).message ?? e).slice(0, 300);
        expect(failure, `${rep.name} should fail without shader-f16`).toMatch(/f16/);
        measured.push(`  ${rep.name.padEnd(14)} not run: ${failure}`);
        return ctx.skip(`needs shader-f16, which this adapter lacks; onnxruntime-web said: ${failure}`);
      });
      const want = oracleLogits(set, rep.oracle);
      expectClose(base, want, rep.tol, `${rep.name} fused webgpu logits vs oracle`);
      expect(await greedy(ort, g, set.prompt, GREEDY, { extraFeeds: none.feeds })).toEqual(
        oracleGreedy(set, rep.oracle),
      );
      // The PEFT adapter (rank_pattern, alpha_pattern) vs its merged-weights oracle, on the fused graph.
      const half = new Set(
        inj.targets.filter((t) => t.inputDtype === 'float16').flatMap((t) => [t.inputA, t.inputB]),
      );
      const feeds: Record<string, OrtTensor> = {};
      for (const [k, f] of peftToFeeds(set.adapter.config, set.adapter.tensors, inj.targets).feeds) {
        feeds[k] = half.has(k)
          ? new ort.Tensor('float16', toHalfBits(f.data), f.dims)
          : new ort.Tensor('float32', f.data, f.dims);
      }
      const lora = await promptLogits(ort, g, set.prompt, feeds);
      const loraWant = oracleLogits(set, rep.loraOracle);
      expectClose(lora, loraWant, rep.tol, `${rep.name} fused webgpu + adapter vs merged oracle`);
      measured.push(
        `  ${rep.name.padEnd(14)} base ${maxAbsDiff(base, want).toExponential(1)}  +adapter ${maxAbsDiff(lora, loraWant).toExponential(1)}`,
      );
    } finally {
      none.dispose();
      await g.session.release();
    }
  });
});
