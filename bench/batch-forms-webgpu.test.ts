/**
 * `npx vitest run -c bench/batch-forms.vitest.config.ts` — bench/batch-forms.ts's two batch feed forms on
 * onnxruntime-web's WebGPU EP in Chromium (SwiftShader here: few steps), 4 rows, each a different random
 * rank-8 adapter on the 42 targets of the default q4 model: concat + row mask (batch-feeds.ts, A/B uploaded
 * once) vs per-row (rows, in, R) / (rows, R, out) factors (uploaded once), each with the Einsum branch (the
 * engine's webgpu operator; per-row rewrites the equations to `abi,air->abr` / `abr,aro->abo`) and with
 * MatMul. Rows prefilled alone (32 tokens), then every form steps the same ids in lockstep (order
 * rotating; the first step is an unmeasured warm-up). Prints BF-RESULT: per form the median ms/step and the
 * median paired ratio to the engine's form, the max |logit diff| to it, and a sanity form (per-row with the
 * adapters rotated across rows) that must differ. A bench, not part of `npm test`; it asserts only that
 * the forms pick the same tokens.
 */
import { describe, expect, it } from 'vitest';
import { batchLoraFeeds } from '../src/engine/batch-feeds.ts';
import { BatchKv } from '../src/engine/batch-kv.ts';
import { argmax } from '../src/engine/sampling.ts';
import {
  decoderGraph,
  decoderSessionOptions,
  KvStepper,
  type Ort,
  type OrtTensor,
} from '../src/engine/session.ts';
import { injectLora, type LoraTarget } from '../src/model/inject-lora.ts';
import { decodeModel, encodeModel, graphOf, type ModelProto, outputsOf } from '../src/model/onnx-io.ts';
import { parseModelConfig } from '../src/model/package.ts';
import { MODEL_BASE, setupOrt } from '../tests/browser/helpers/model.ts';
import { perRowGraph, randomLoraFeeds } from './random-lora.ts';

const ort = setupOrt();
const ortApi = ort as unknown as Ort;
const ROWS = 4;
const R = 8;
const STEPS = Number(import.meta.env.VITE_BF_STEPS ?? 8);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

describe('batch feed forms on webgpu (scratch)', () => {
  it('rows=4: concat+mask vs per-row', async () => {
    const config = parseModelConfig(await (await fetch(`${MODEL_BASE}config.json`)).json());
    const bytes = new Uint8Array(await (await fetch(`${MODEL_BASE}onnx/model_q4.onnx`)).arrayBuffer());
    const base = decodeModel(bytes);
    const present = outputsOf(graphOf(base))
      .map((o) => o.name)
      .filter((n) => n.startsWith('present.'));
    const mk = async (m: ModelProto) =>
      decoderGraph(
        await ort.InferenceSession.create(encodeModel(m), decoderSessionOptions('webgpu', present)),
        config,
      );
    const forms: {
      name: string;
      graph: Awaited<ReturnType<typeof mk>>;
      targets: LoraTarget[];
      perRow: boolean;
      rotated?: boolean;
    }[] = [];
    for (const op of ['einsum', 'matmul'] as const) {
      const c = injectLora(base, { branchOp: op, rowMask: true });
      forms.push({ name: `concat+mask ${op}`, graph: await mk(c.model), targets: c.targets, perRow: false });
      const p = injectLora(base, { branchOp: op });
      forms.push({
        name: `per-row ${op}`,
        graph: await mk(perRowGraph(p.model, p.targets)),
        targets: p.targets,
        perRow: true,
      });
    }
    const device = (await ort.env.webgpu.device) as GPUDevice;
    const targets = forms[0]!.targets;
    const adapters = Array.from({ length: ROWS }, (_, k) =>
      randomLoraFeeds(ortApi, targets, R, 1 + k * 1000),
    );
    const upload = (data: Float32Array, dims: number[]) => {
      const buf = device.createBuffer({
        size: Math.ceil(data.byteLength / 16) * 16,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      });
      device.queue.writeBuffer(buf, 0, data.buffer, data.byteOffset, data.byteLength);
      return ort.Tensor.fromGpuBuffer(buf, { dataType: 'float32', dims }) as unknown as OrtTensor;
    };
    const stacked: Record<string, OrtTensor> = {};
    for (const t of targets) {
      const A = new Float32Array(ROWS * t.in * R);
      const B = new Float32Array(ROWS * R * t.out);
      adapters.forEach((a, b) => {
        A.set(a[t.inputA]!.data as Float32Array, b * t.in * R);
        B.set(a[t.inputB]!.data as Float32Array, b * R * t.out);
      });
      stacked[t.inputA] = upload(A, [ROWS, t.in, R]);
      stacked[t.inputB] = upload(B, [ROWS, R, t.out]);
    }
    const concat = (
      await batchLoraFeeds(
        ortApi,
        adapters.map((feeds, k) => ({ key: `a${k}`, feeds: { feeds, release: () => {} } })),
        targets,
        { device, noAdapter: {} },
      )
    ).feeds;
    // Prefill each row alone on the engine's graph, its own adapter (CPU feeds), 32 tokens.
    const kvs: { data: Float32Array[]; dims: number[][]; length: number }[] = [];
    const first: number[] = [];
    for (let b = 0; b < ROWS; b++) {
      const prompt = Array.from({ length: 32 }, (_, i) => (i * 7919 + 13 + b * 101) % config.vocabSize);
      const st = new KvStepper(ortApi, forms[0]!.graph, adapters[b]!);
      first.push(argmax(await st.step(prompt)));
      const kv = st.takeKv();
      kvs.push({
        data: await Promise.all(kv.tensors.map(async (t) => ((await t.getData()) as Float32Array).slice())),
        dims: kv.tensors.map((t) => [...t.dims]),
        length: kv.length,
      });
      for (const t of kv.tensors) t.dispose();
    }
    // Sanity: per-row einsum with the rows' adapters rotated by one (must differ from the others).
    const rotated: Record<string, OrtTensor> = {};
    for (const t of targets) {
      const A = new Float32Array(ROWS * t.in * R);
      const B = new Float32Array(ROWS * R * t.out);
      adapters.forEach((_, b) => {
        const a = adapters[(b + 1) % ROWS]!;
        A.set(a[t.inputA]!.data as Float32Array, b * t.in * R);
        B.set(a[t.inputB]!.data as Float32Array, b * R * t.out);
      });
      rotated[t.inputA] = upload(A, [ROWS, t.in, R]);
      rotated[t.inputB] = upload(B, [ROWS, R, t.out]);
    }
    forms.push({ ...forms[1]!, name: 'per-row einsum, adapters rotated (sanity)', rotated: true });
    const batch = await Promise.all(
      forms.map(async (f) => {
        const kv = new BatchKv(ortApi, f.graph);
        for (const r of kvs)
          await kv.join({
            tensors: r.data.map(
              (d, i) => new ort.Tensor('float32', d.slice(), r.dims[i]!) as unknown as OrtTensor,
            ),
            length: r.length,
          });
        return kv;
      }),
    );
    const ms = forms.map(() => [] as number[]);
    let ids = first;
    let diff = 0;
    let mismatch = 0;
    let rot = 0;
    for (let s = 0; s < STEPS + 1; s++) {
      const out: Float32Array[][] = forms.map(() => []);
      for (let j = 0; j < forms.length; j++) {
        const i = (j + s) % forms.length;
        const t0 = performance.now();
        out[i] = await batch[i]!.step(
          ids,
          forms[i]!.rotated ? rotated : forms[i]!.perRow ? stacked : concat,
          forms[i]!.graph,
        );
        if (s > 0) ms[i]!.push(performance.now() - t0); // step 0: warm-up (shader compile)
      }
      out[forms.length - 1]!.forEach((l, b) => {
        for (let k = 0; k < l.length; k++) rot = Math.max(rot, Math.abs(l[k]! - out[0]![b]![k]!));
      });
      for (let i = 1; i < forms.length - 1; i++) {
        out[i]!.forEach((l, b) => {
          for (let k = 0; k < l.length; k++) diff = Math.max(diff, Math.abs(l[k]! - out[0]![b]![k]!));
          if (argmax(l) !== argmax(out[0]![b]!)) mismatch++;
        });
      }
      ids = out[0]!.map((l) => argmax(l));
    }
    const lines = forms.map(
      (f, i) =>
        `| ${f.name} | ${median(ms[i]!).toFixed(1)} | ${median(ms[i]!.map((x, k) => x / ms[0]![k]!)).toFixed(3)} | ${ms[i]!.map((x) => x.toFixed(0)).join(', ')} |`,
    );
    console.log(
      `BF-RESULT rows=${ROWS} steps=${STEPS} maxdiff=${diff.toExponential(1)} argmax-mismatch=${mismatch} rotated-diff=${rot.toFixed(3)}\n| form | ms/step, median | / concat+mask einsum, median of paired steps | ms per step |\n|---|---|---|---|\n${lines.join('\n')}`,
    );
    expect(mismatch).toBe(0);
  });
});
