// scripts/py/replica_135m.py, the smoke test: the same code at `--size tiny` (2 layers, hidden 64, vocab 2048;
// ~2 s) writes a package that our loader and onnxruntime-web (wasm, Node) take as they would the 135M one:
// config shape, a tokenizer whose encoding matches the Python BPE (scripts/py/bpe.py, the oracle), an fp32
// file and a q4 file made by our quantizer (default options: projections and lm_head MatMulNBits, the tied
// embedding read from the lm_head's blocks), and q4 greedy = fp32 greedy.
// `--layout builder` at the same size and seed: the onnxruntime-genai builder layout (replicas.py's
// build_builder: GroupQueryAttention, packed qkv_proj, no position_ids), every weight in `<file>_data`
// (fp32 and q4, the q4 one read and written by our quantizer through external data), detected as such, and
// the SAME model: its logits equal the Optimum files' (same weights, other ops) for a prompt and a decode step.
// The full 135M replicas (~650 MB, ~30 s here, ~1 GB with q4) are for `npm run bench -- --model`, not CI.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalEngine } from '../../../src/engine/engine.ts';
import { createDecoderSession, greedy, KvStepper, type Ort } from '../../../src/engine/session.ts';
import { TextTokenizer } from '../../../src/engine/tokenizer.ts';
import { detectLayout } from '../../../src/model/layout.ts';
import {
  decodeModel,
  externalDataLocations,
  graphOf,
  initializersOf,
  isExternal,
  nodesOf,
} from '../../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../../src/model/package.ts';
import { expectClose, FP32_LOGITS } from '../../helpers/expect-close.ts';
import { REPO_ROOT } from '../../helpers/fixtures.ts';

const PY = '/usr/bin/python3';
const dir = mkdtempSync(join(tmpdir(), 'weblora-replica-'));
const bdir = mkdtempSync(join(tmpdir(), 'weblora-builder-replica-'));
const TEXT = 'HAMLET:\nTo be, or not to be, that is the question: 1603 ¿qué? ✓';

let built: ReturnType<typeof spawnSync>;
let builtBuilder: ReturnType<typeof spawnSync>;
beforeAll(() => {
  ort.env.wasm.numThreads = 1;
  const make = (out: string, ...more: string[]) =>
    spawnSync(PY, ['scripts/py/replica_135m.py', '--size', 'tiny', '--out', out, ...more], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
    });
  built = make(dir);
  builtBuilder = make(bdir, '--layout', 'builder');
}, 120_000);
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(bdir, { recursive: true, force: true });
});

const read = (p: string): Buffer => readFileSync(join(dir, p));
const json = (p: string): unknown => JSON.parse(read(p).toString('utf8'));

describe('replica_135m.py --size tiny', () => {
  it('writes config, tokenizer, fp32 and q4 files', () => {
    expect(built.status, String(built.stderr)).toBe(0);
    const c = parseModelConfig(json('config.json'));
    expect(c).toMatchObject({ vocabSize: 2048, hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2 });
    expect(json('config.json')).toMatchObject({ tie_word_embeddings: true, rope_theta: 100000 });
  });

  it('tokenizer: 2048 ids, <|endoftext|> last, encodes as the Python BPE does', () => {
    const tj = json('tokenizer.json') as { model: { vocab: Record<string, number> } };
    const ids = Object.values(tj.model.vocab).sort((a, b) => a - b);
    expect(ids).toEqual(Array.from({ length: 2048 }, (_, i) => i));
    expect(tj.model.vocab['<|endoftext|>']).toBe(2047);
    const tok = TextTokenizer.fromJSON(tj, json('tokenizer_config.json'));
    const py = spawnSync(
      PY,
      [
        '-c',
        'import json,sys; sys.path.insert(0,"scripts/py"); import bpe, replica_135m as r; ' +
          't=bpe.Tokenizer(r.extended_merges(2048)); print(json.dumps(t.encode(sys.stdin.read())))',
      ],
      { cwd: REPO_ROOT, encoding: 'utf8', input: TEXT },
    );
    expect(py.status, py.stderr).toBe(0);
    expect(tok.encode(TEXT)).toEqual(JSON.parse(py.stdout));
    expect(tok.decode(tok.encode(TEXT))).toBe(TEXT);
  });

  it('q4 file: projections and lm_head MatMulNBits, embedding from their blocks; greedy = fp32 file', async () => {
    const ops = (f: string) => nodesOf(graphOf(decodeModel(read(f)))).map((n) => n.opType);
    expect(ops('onnx/model_q4.onnx').filter((o) => o === 'MatMulNBits')).toHaveLength(7 * 2 + 1);
    expect(ops('onnx/model_q4.onnx')).not.toContain('GatherBlockQuantized');
    expect(ops('onnx/model_q4.onnx').filter((o) => o === 'Floor')).toHaveLength(1); // the nibble split
    expect(ops('onnx/model.onnx')).not.toContain('MatMulNBits');
    const config = parseModelConfig(json('config.json'));
    const prompt = [5, 300, 1200, 77, 9, 2000];
    const out: number[][] = [];
    for (const f of ['onnx/model.onnx', 'onnx/model_q4.onnx']) {
      const g = await createDecoderSession(ort, read(f), config, { backend: 'wasm' });
      out.push(await greedy(ort, g, prompt, 4));
      await g.session.release();
    }
    expect(out[0]).toHaveLength(4);
    expect(out[1]).toEqual(out[0]);
  });
});

describe('replica_135m.py --size tiny --layout builder', () => {
  const bread = (p: string): Buffer => readFileSync(join(bdir, p));
  const bjson = (p: string): unknown => JSON.parse(bread(p).toString('utf8'));
  const FILES = { fp32: 'onnx/model.onnx', q4: 'onnx/model_q4.onnx' } as const;

  it('writes the same config and tokenizer, and says each file has external data', () => {
    expect(builtBuilder.status, String(builtBuilder.stderr)).toBe(0);
    const {
      weblora_replica: _a,
      _name_or_path: _b,
      'transformers.js_config': tjs,
      ...rest
    } = bjson('config.json') as Record<string, unknown>;
    const {
      weblora_replica: _c,
      _name_or_path: _d,
      ...optimum
    } = json('config.json') as Record<string, unknown>;
    expect(rest).toEqual(optimum);
    expect(tjs).toEqual({ use_external_data_format: true });
    expect(bread('tokenizer.json').equals(read('tokenizer.json'))).toBe(true);
  });

  it('fp32 and q4 files: builder layout, every weight in <file>_data; q4 nodes …/MatMul_Q4, embedding from blocks', () => {
    const fp32 = decodeModel(bread(FILES.fp32));
    const q4 = decodeModel(bread(FILES.q4));
    const common = {
      family: 'builder',
      packedQkv: true,
      rotary: 'gqa',
      positionIds: false,
      externalData: true,
    };
    expect(detectLayout(fp32)).toMatchObject({ ...common, weights: 'fp32', kvDtype: 'float32' });
    expect(detectLayout(q4)).toMatchObject({ ...common, weights: 'q4', kvDtype: 'float32' });
    expect(externalDataLocations(fp32)).toEqual(['model.onnx_data']);
    expect(externalDataLocations(q4)).toEqual(['model_q4.onnx_data']);
    // Only tensors under 64 bytes (shape constants) stay inline.
    for (const m of [fp32, q4]) {
      for (const t of initializersOf(graphOf(m))) {
        if (!isExternal(t)) expect(t.rawData?.byteLength ?? 0, t.name).toBeLessThan(64);
      }
    }
    const nbits = nodesOf(graphOf(q4)).filter((n) => n.opType === 'MatMulNBits');
    // Per layer qkv_proj, o_proj, gate_proj, up_proj, down_proj; then the lm_head.
    expect(nbits.map((n) => n.name)).toEqual([
      ...[0, 1].flatMap((i) =>
        ['attn/qkv_proj', 'attn/o_proj', 'mlp/gate_proj', 'mlp/up_proj', 'mlp/down_proj'].map(
          (m) => `/model/layers.${i}/${m}/MatMul_Q4`,
        ),
      ),
      '/lm_head/MatMul_Q4',
    ]);
    const ops = nodesOf(graphOf(q4)).map((n) => n.opType);
    expect(ops.filter((o) => o === 'GroupQueryAttention')).toHaveLength(2);
    expect(ops.filter((o) => o === 'Floor')).toHaveLength(1); // the embedding's nibble split
    expect(initializersOf(graphOf(q4)).map((t) => t.name)).not.toContain('model.embed_tokens.weight');
  });

  it('is the Optimum replica in another layout: equal logits (prompt, then a decode step), fp32 and q4', async () => {
    const config = parseModelConfig(bjson('config.json'));
    const prompt = [5, 300, 1200, 77, 9, 2000];
    const run = async (bytes: Buffer, externalData?: { path: string; data: Uint8Array }[]) => {
      const g = await createDecoderSession(ort, bytes, config, { backend: 'wasm', externalData });
      const stepper = new KvStepper(ort, g);
      const all = await stepper.step(prompt, { allLogits: true });
      const next = await stepper.step([1500]);
      const tokens = await greedy(ort, g, prompt, 4);
      stepper.dispose();
      await g.session.release();
      return { all, next, tokens };
    };
    const out: Record<string, Awaited<ReturnType<typeof run>>> = {};
    for (const [dtype, f] of Object.entries(FILES)) {
      const ext = [{ path: `${f.slice(5)}_data`, data: bread(`${f}_data`) }];
      out[`builder ${dtype}`] = await run(bread(f), ext);
      out[`optimum ${dtype}`] = await run(read(f));
    }
    for (const dtype of Object.keys(FILES)) {
      const [b, o] = [out[`builder ${dtype}`]!, out[`optimum ${dtype}`]!];
      expect(b.all).toHaveLength(prompt.length * 2048);
      expectClose(b.all, o.all, FP32_LOGITS);
      expectClose(b.next, o.next, FP32_LOGITS);
      expect(b.tokens).toEqual(o.tokens);
    }
    expect(out['builder q4']!.tokens).toEqual(out['builder fp32']!.tokens);
  });

  it('LocalEngine on wasm dequantizes the external-data q4 weights at load (11 nodes), same tokens as 4-bit', async () => {
    const paths = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json'];
    const picked = () =>
      [...paths, FILES.q4, `${FILES.q4}_data`].map((p) => new File([new Uint8Array(bread(p))], p));
    const engine = new LocalEngine({
      ort: ort as unknown as Ort,
      wasmPaths: new URL('../../../node_modules/onnxruntime-web/dist/', import.meta.url).href,
      numThreads: 1,
      adapterStore: null,
      baseGraphForNoAdapter: false,
    });
    try {
      const run = async (wasmDequantize: 'never' | 'auto') => {
        const report = await engine.loadModel(picked(), { backend: 'wasm', wasmDequantize });
        const r = await engine.generate({ prompt: 'HAMLET:', maxNewTokens: 6 });
        return { report, tokens: r.tokenIds };
      };
      const never = await run('never');
      const auto = await run('auto');
      expect(never.report.dtype).toBe('q4');
      expect(never.report.dequantizedAtLoad).toMatchObject({ nodes: 0, kept: 11 });
      expect(auto.report.dequantizedAtLoad).toMatchObject({ nodes: 11, kept: 0 });
      expect(never.tokens).toHaveLength(6);
      expect(auto.tokens).toEqual(never.tokens);
    } finally {
      await engine.dispose();
    }
  });
});
