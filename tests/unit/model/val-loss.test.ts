// The shipped model meets its quality targets, measured by our TypeScript stack on the committed ONNX
// files (not by PyTorch): validation loss <= 1.65 nats/char for fp32, q4 within +0.05 of fp32, and
// model_q4.onnx <= 8 MB. Full validation split (last 10% of tinyshakespeare), strided windows as in
// scripts/eval-val-loss.ts; ~1 minute per file on one wasm thread.
import { statSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { evalValLoss } from '../../../scripts/eval-val-loss.ts';

const DIR = 'public/models/weblora-shakespeare';

describe('default model validation loss (nats per character)', () => {
  it('fp32 <= 1.65, q4 <= fp32 + 0.05, q4 file <= 8 MB', { timeout: 600_000 }, async () => {
    const rows = await evalValLoss(DIR, ['model.onnx', 'model_q4.onnx']);
    expect(rows.map((r) => r.file)).toEqual(['model.onnx', 'model_q4.onnx']);
    const [fp32, q4] = rows as [(typeof rows)[0], (typeof rows)[0]];
    console.log(
      `val nats/char: fp32 ${fp32.natsPerChar.toFixed(4)}, q4 ${q4.natsPerChar.toFixed(4)} ` +
        `(+${(q4.natsPerChar - fp32.natsPerChar).toFixed(4)}); q4 ${(q4.bytes / 1e6).toFixed(2)} MB`,
    );
    // every validation token but the first is scored exactly once
    expect(fp32.tokens).toBe(q4.tokens);
    expect(fp32.chars).toBeGreaterThan(111_000);
    expect(fp32.natsPerChar).toBeLessThanOrEqual(1.65);
    expect(q4.natsPerChar - fp32.natsPerChar).toBeLessThanOrEqual(0.05);
    expect(statSync(`${DIR}/onnx/model_q4.onnx`).size).toBeLessThanOrEqual(8 * 1024 * 1024);
  });
});
