/**
 * `npx vitest run -c bench/fusion-forms.vitest.config.ts` (env VITE_BACKEND=webgpu|wasm, VITE_STEPS,
 * VITE_PREFILL) — how src/model/fuse-decoder.ts's attention forms compare, the measurement behind
 * `fuseOptionsFor`: the default model's q4 graph with the greedy head, unfused and fused four ways (Einsum
 * or Transpose + MatMul for the scores, Einsum or MatMul for the mix), each in its own session. Three
 * rounds (the first a warm-up) of a prefill (128 tokens) then VITE_STEPS decode steps, the sessions in
 * lockstep with a rotating order. Prints FF-RESULT: per form the median prefill and decode ms and the
 * speed-up over unfused (prefill: ratio of medians; decode: median of paired steps). A bench, not part of
 * `npm test`; it asserts only that every form picks the unfused graph's first token.
 */
import { expect, it } from 'vitest';
import { argmax } from '../src/engine/sampling.ts';
import { decoderGraph, decoderSessionOptions, KvStepper, type Ort } from '../src/engine/session.ts';
import { type FuseOptions, fuseDecoder } from '../src/model/fuse-decoder.ts';
import { withGreedyHead } from '../src/model/greedy-head.ts';
import { decodeModel, encodeModel, graphOf, outputsOf } from '../src/model/onnx-io.ts';
import { parseModelConfig } from '../src/model/package.ts';
import { MODEL_BASE, setupOrt } from '../tests/browser/helpers/model.ts';
import { median } from './stats.ts';

const ort = setupOrt();
const BACKEND = (import.meta.env.VITE_BACKEND ?? 'webgpu') as 'webgpu' | 'wasm';
const STEPS = Number(import.meta.env.VITE_STEPS ?? 4);
const PREFILL = Number(import.meta.env.VITE_PREFILL ?? 128);
const FORMS: [string, FuseOptions | null][] = [
  ['unfused', null],
  ['einsum scores + einsum mix', { norms: true, rotary: true, attention: 'einsum' }],
  ['matmul scores + matmul mix', { norms: true, rotary: true, attention: 'matmul' }],
  ['einsum scores + matmul mix', { norms: true, rotary: true, attention: 'einsum-matmul' }],
];

it(`decoder fusion attention forms (${BACKEND})`, async () => {
  const config = parseModelConfig(await (await fetch(`${MODEL_BASE}config.json`)).json());
  const file = await (await fetch(`${MODEL_BASE}onnx/model_q4.onnx`)).arrayBuffer();
  const base = decodeModel(new Uint8Array(file));
  const present = outputsOf(graphOf(base))
    .map((o) => o.name)
    .filter((n) => n.startsWith('present.'));
  const graphs = [];
  for (const [, o] of FORMS) {
    const m = withGreedyHead(o ? fuseDecoder(base, config, o).model : base).model;
    const s = await ort.InferenceSession.create(encodeModel(m), decoderSessionOptions(BACKEND, present));
    graphs.push(decoderGraph(s, config));
  }
  const prompt = Array.from({ length: PREFILL }, (_, i) => (i * 7 + 3) % config.vocabSize);
  const pre = FORMS.map(() => [] as number[]);
  const dec = FORMS.map(() => [] as number[]);
  for (let r = 0; r < 3; r++) {
    const st = graphs.map((g) => new KvStepper(ort as unknown as Ort, g, {}));
    const first: number[] = [];
    for (let j = 0; j < st.length; j++) {
      const i = (j + r) % st.length;
      const t0 = performance.now();
      first[i] = argmax(await st[i]!.step(prompt));
      if (r > 0) pre[i]!.push(performance.now() - t0);
    }
    expect(first).toEqual(first.map(() => first[0]));
    for (let s = 0; s < STEPS; s++) {
      for (let j = 0; j < st.length; j++) {
        const i = (j + s) % st.length;
        const t0 = performance.now();
        await st[i]!.step([first[0]!]);
        if (r > 0) dec[i]!.push(performance.now() - t0);
      }
    }
    for (const s of st) s.dispose();
  }
  for (const g of graphs) await g.session.release();
  const rows = FORMS.map(([name], i) => {
    const p = median(pre[i]!);
    const d = median(dec[i]!);
    const speed = median(dec[i]!.map((x, k) => dec[0]![k]! / x));
    return `| ${name} | ${p.toFixed(0)} | ${(median(pre[0]!) / p).toFixed(3)} | ${d.toFixed(1)} | ${speed.toFixed(3)} |`;
  });
  console.log(
    `FF-RESULT ${BACKEND}, prefill ${PREFILL} tokens, ${STEPS} decode steps × 2 rounds\n` +
      '| form | prefill ms | prefill speed-up | decode ms/step | decode speed-up (paired) |\n|---|---|---|---|---|\n' +
      rows.join('\n'),
  );
}, 1_800_000);
