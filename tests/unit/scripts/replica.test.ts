// scripts/py/replica_135m.py, the smoke test: the same code at `--size tiny` (2 layers, hidden 64, vocab 2048;
// ~2 s) writes a package that our loader and onnxruntime-web (wasm, Node) take as they would the 135M one:
// config shape, a tokenizer whose encoding matches the Python BPE (scripts/py/bpe.py, the oracle), an fp32
// file and a q4 file made by our quantizer (default options: projections and lm_head MatMulNBits, the tied
// embedding read from the lm_head's blocks), and q4 greedy = fp32 greedy.
// The full 135M replica (~650 MB, ~30 s here, ~1 GB with q4) is for `npm run bench -- --model`, not CI.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDecoderSession, greedy } from '../../../src/engine/session.ts';
import { TextTokenizer } from '../../../src/engine/tokenizer.ts';
import { decodeModel, graphOf, nodesOf } from '../../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../../src/model/package.ts';
import { REPO_ROOT } from '../../helpers/fixtures.ts';

const PY = '/usr/bin/python3';
const dir = mkdtempSync(join(tmpdir(), 'weblora-replica-'));
const TEXT = 'HAMLET:\nTo be, or not to be, that is the question: 1603 ¿qué? ✓';

let built: ReturnType<typeof spawnSync>;
beforeAll(() => {
  ort.env.wasm.numThreads = 1;
  built = spawnSync(PY, ['scripts/py/replica_135m.py', '--size', 'tiny', '--out', dir], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
  });
}, 120_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

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
