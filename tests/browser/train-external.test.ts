// Training through the Engine on a model whose weights sit in external data, with a packed qkv_proj (the
// onnxruntime-genai builder replicas builder/ (fp32) and builder-q4/, as a picked folder): the trainer
// reads the frozen weights from the chunks the loader holds, trains q_proj/v_proj (rows of the packed
// qkv_proj) and down_proj on the CPU backend and on the WebGPU one (its own device; SwiftShader here), and
// the stored adapter — imported onto the per-part q/k/v branches of the packed target — makes generate give
// exactly the greedy tokens of the CPU trainer's forward (CpuLoraModel), and differ from the base model's.
import * as ort from 'onnxruntime-web';
import { describe, expect, it } from 'vitest';
import { parsePeftConfig } from '../../src/adapters/peft.ts';
import { parseSafetensors, readFloat32 } from '../../src/adapters/safetensors.ts';
import { AdapterStore } from '../../src/adapters/store.ts';
import { LocalEngine } from '../../src/engine/engine.ts';
import { decodeModel } from '../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../src/model/package.ts';
import { CheckpointStore } from '../../src/train/checkpoints.ts';
import { CpuLoraModel } from '../../src/train/cpu-model.ts';
import { loraFromPeft } from '../../src/train/lora.ts';
import { decoderConfig, loadFrozenWeights } from '../../src/train/weights.ts';
import { replicaPackage } from '../helpers/replica-package.ts';

ort.env.wasm.wasmPaths = new URL('/ort/', location.href).href;
ort.env.wasm.numThreads = 1;

const FIXTURES = '/tests/fixtures/replicas/';
const read = async (p: string) => {
  const r = await fetch(FIXTURES + p);
  if (!r.ok) throw new Error(`fetch ${p}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
};
const RUN = Date.now().toString(36);

describe('train() on an external-data model with a packed qkv_proj (builder replica)', () => {
  it.each([
    ['fp32', 'cpu'],
    ['fp32', 'webgpu'],
    ['q4', 'webgpu'],
  ] as const)(
    '%s, %s training works; generate with the result = the CPU trainer forward (greedy tokens)',
    async (dtype, device) => {
      const pkg = await replicaPackage(read, {
        files: dtype === 'q4' ? { q4: 'builder-q4/model.onnx' } : { fp32: 'builder/model.onnx' },
      });
      const file = dtype === 'q4' ? 'model_q4.onnx' : 'model.onnx';
      const files = [...pkg].map(([p, b]) => {
        const f = new File([b as Uint8Array<ArrayBuffer>], p.split('/').at(-1)!);
        Object.defineProperty(f, 'webkitRelativePath', { value: `tiny-builder/${p}` });
        return f;
      });
      const store = new AdapterStore({ dbName: `weblora-test-train-ext-${dtype}-${device}-${RUN}` });
      const checkpointStore = new CheckpointStore({
        dbName: `weblora-test-train-ext-ckpt-${dtype}-${device}-${RUN}`,
      });
      const engine = new LocalEngine({ ort, numThreads: 1, adapterStore: store, checkpointStore });
      try {
        const report = await engine.loadModel(files, { backend: 'wasm', dtype });
        expect(report.externalDataChunks).toBe(1);
        // PACKED_LORA_DEFAULT 'per-part': q/k/v get their own branches inside the packed qkv_proj.
        expect(report.targets.filter((t) => t.layer === 0).map((t) => [t.module, t.packedIn])[0]).toEqual([
          'q_proj',
          'qkv_proj',
        ]);
        // Letters and digits only: the replica's byte-level vocabulary has no space or newline symbol.
        const words = ['abc', 'bcd', 'cde', 'def', 'efg', 'fgh', 'ghi', 'hij'];
        const data = words.map((w) => JSON.stringify({ prompt: w, completion: w.toUpperCase() })).join('\n');
        const r = await engine.train({
          name: 'ext',
          data,
          rank: 2,
          alpha: 4,
          targets: ['q_proj', 'v_proj', 'down_proj'],
          steps: 4,
          lr: 5e-2,
          batchSize: 2,
          seqLen: 16,
          evalSplit: 0,
          checkpointEvery: 0,
          seed: 0,
          device,
        });
        expect(r).toMatchObject({ status: 'done', steps: 4, adapter: { name: 'ext' }, device });

        const exported = await engine.exportAdapter('ext');
        const tensors = parseSafetensors(exported['adapter_model.safetensors']).tensors;
        const qB = readFloat32(
          tensors.get('base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight')!,
        );
        expect(qB.some((x) => x !== 0)).toBe(true); // trained, not the zero init
        const cfgJson = JSON.parse(new TextDecoder().decode(pkg.get('config.json')!));
        const weights = loadFrozenWeights(
          decodeModel(pkg.get(`onnx/${file}`)!),
          decoderConfig(parseModelConfig(cfgJson)),
          [{ path: `${file}_data`, data: pkg.get(`onnx/${file}_data`)! }],
        );
        const cfg = parsePeftConfig(new TextDecoder().decode(exported['adapter_config.json']));
        const model = new CpuLoraModel(weights, loraFromPeft(cfg, tensors, weights));
        let changed = 0;
        for (const prompt of ['abc', 'xyz', 'hij']) {
          const start = [...prompt].map((c) => c.charCodeAt(0)); // the replica tokenizer: id = byte
          const mine: number[] = [];
          for (let i = 0; i < 5; i++) {
            const seq = [...start, ...mine];
            model.forward({ B: 1, T: seq.length, tokens: seq });
            const V = weights.config.V;
            const row = model.logits.subarray((seq.length - 1) * V, seq.length * V);
            let best = 0;
            for (let v = 1; v < V; v++) if (row[v]! > row[best]!) best = v;
            mine.push(best);
            if (best === 0) break; // eos
          }
          const g = await engine.generate({ prompt, adapter: 'ext', maxNewTokens: mine.length });
          expect(g.tokenIds).toEqual(mine);
          const base = await engine.generate({ prompt, adapter: null, maxNewTokens: mine.length });
          if (base.tokenIds.join() !== mine.join()) changed++;
        }
        expect(changed).toBeGreaterThan(0); // the adapter is live in generate, not a no-op
      } finally {
        await engine.dispose();
      }
    },
  );
});
