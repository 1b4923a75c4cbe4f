// LoadOptions.wasmDequantize reaches the model load: LocalEngine on Node's onnxruntime-web (wasm) loads the
// shipped q4 default model with 'never', a byte budget that converts 4 of its 42 MatMulNBits, and the
// default 'auto'; LoadReport.dequantizedAtLoad says what was converted and kept, the sessions hold less
// with fewer fp32 weights, and all three give the same greedy tokens (the wasm MatMulNBits kernel computes
// with the very f32 weights the pass writes: model/dequantize.ts). A bad value is a typed error before
// anything is loaded, and the loaded model stays usable.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-web';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalEngine } from '../../../src/engine/engine.ts';
import type { Ort } from '../../../src/engine/session.ts';
import type { LoadOptions, LoadReport } from '../../../src/engine/types.ts';
import { InvalidOptionError } from '../../../src/errors.ts';

const PKG = fileURLToPath(new URL('../../../public/models/weblora-shakespeare/', import.meta.url));
const FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'onnx/model_q4.onnx',
];
const picked = () => FILES.map((path) => new File([readFileSync(PKG + path)], path));

// fp32 bytes per weight of the default model (C = 256, kv 128, I = 704), as in tests/unit/model/dequantize.test.ts.
const QO = 256 * 256 * 4;
const KV = 256 * 128 * 4;
const MLP = 256 * 704 * 4;
const ALL = 6 * (2 * QO + 2 * KV + 3 * MLP);

describe('LoadOptions.wasmDequantize through LocalEngine.loadModel (wasm)', () => {
  const engine = new LocalEngine({
    ort: ort as unknown as Ort,
    // Node loads the wasm from the package itself (the default is the app's http URL).
    wasmPaths: new URL('../../../node_modules/onnxruntime-web/dist/', import.meta.url).href,
    numThreads: 1,
    adapterStore: null,
    baseGraphForNoAdapter: false,
  });
  afterAll(() => engine.dispose());
  const run = async (opts: LoadOptions): Promise<{ report: LoadReport; tokens: number[] }> => {
    const report = await engine.loadModel(picked(), { backend: 'wasm', ...opts });
    const r = await engine.generate({ prompt: 'ROMEO:', maxNewTokens: 8 });
    return { report, tokens: r.tokenIds };
  };

  it("'never', a budget and 'auto' convert 0, 4 and 42 nodes; same greedy tokens; a bad value is an InvalidOptionError", async () => {
    const never = await run({ wasmDequantize: 'never' });
    expect(never.report.dequantizedAtLoad).toMatchObject({
      nodes: 0,
      fp32Bytes: 0,
      kept: 42,
      keptFp32Bytes: ALL,
      maxBytes: 0,
    });
    const budget = 3 * MLP + QO;
    const some = await run({ wasmDequantize: budget });
    expect(some.report.dequantizedAtLoad).toMatchObject({
      nodes: 4,
      fp32Bytes: budget,
      kept: 38,
      keptFp32Bytes: ALL - budget,
      maxBytes: budget,
    });
    const auto = await run({});
    expect(auto.report.dequantizedAtLoad).toMatchObject({
      nodes: 42,
      fp32Bytes: ALL,
      kept: 0,
      maxBytes: 2 ** 30,
    });
    // More fp32 weights, more bytes handed to the session (an fp32 weight is 8× its 4-bit blocks).
    expect(never.report.sessionBytes).toBeLessThan(some.report.sessionBytes);
    expect(some.report.sessionBytes).toBeLessThan(auto.report.sessionBytes);
    console.info(
      `sessionBytes never ${never.report.sessionBytes}, budget ${some.report.sessionBytes}, auto ${auto.report.sessionBytes}`,
    );
    expect(never.tokens).toHaveLength(8);
    expect(some.tokens).toEqual(never.tokens);
    expect(auto.tokens).toEqual(never.tokens);

    await expect(engine.loadModel(picked(), { backend: 'wasm', wasmDequantize: -1 })).rejects.toThrow(
      InvalidOptionError,
    );
    // Rejected before the old model was freed: it still runs.
    const again = await engine.generate({ prompt: 'ROMEO:', maxNewTokens: 8 });
    expect(again.tokenIds).toEqual(never.tokens);
  });
});
