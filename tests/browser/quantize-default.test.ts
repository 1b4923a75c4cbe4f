// The quantizer's default output (src/model/quantize.ts: 4-bit lm_head, the tied embedding looked up from
// its blocks with standard ops) on both onnxruntime-web backends in the page: the
// default model quantized here runs on webgpu (SwiftShader) and on wasm, as shipped (MatMulNBits) and as the
// engine runs it on wasm (model/dequantize.ts), with logits within WEBGPU_VS_WASM and the same greedy tokens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDecoderSession, type DecoderGraph, greedy, KvStepper } from '../../src/engine/session.ts';
import { wasmGraphOf } from '../../src/model/dequantize.ts';
import { decodeModel, encodeModel, graphOf, nodesOf } from '../../src/model/onnx-io.ts';
import { quantize } from '../../src/model/quantize.ts';
import { expectClose, maxAbsDiff, WEBGPU_VS_WASM } from '../helpers/expect-close.ts';
import { loadPackage, PROMPT, setupOrt } from './helpers/model.ts';

const ort = setupOrt();

describe('quantize() default output on webgpu and wasm', () => {
  let gpu: DecoderGraph;
  let cpu: DecoderGraph;
  let cpuDequantized: DecoderGraph;
  let ids: number[];
  beforeAll(async () => {
    const { pkg, tok } = await loadPackage('fp32');
    ids = tok.encode(PROMPT);
    const { model, report } = quantize(decodeModel(pkg.model));
    expect(report.tiedEmbedding).not.toBeNull();
    expect(nodesOf(graphOf(model)).filter((n) => n.opType === 'Floor')).toHaveLength(1); // nibble split
    const bytes = encodeModel(model);
    cpu = await createDecoderSession(ort, bytes, pkg.config, { backend: 'wasm' });
    gpu = await createDecoderSession(ort, bytes, pkg.config, { backend: 'webgpu' });
    const dq = wasmGraphOf(model);
    expect(dq.dequantized?.nodes).toBe(43);
    cpuDequantized = await createDecoderSession(ort, encodeModel(dq.model), pkg.config, { backend: 'wasm' });
  }, 120_000);
  afterAll(async () => {
    await gpu?.session.release();
    await cpu?.session.release();
    await cpuDequantized?.session.release();
  });

  it('prefill logits agree: webgpu vs wasm, wasm dequantized vs wasm MatMulNBits', async () => {
    const a = await new KvStepper(ort, gpu).step(ids, { allLogits: true });
    const b = await new KvStepper(ort, cpu).step(ids, { allLogits: true });
    const c = await new KvStepper(ort, cpuDequantized).step(ids, { allLogits: true });
    console.info(`q4 default: webgpu vs wasm max|diff| ${maxAbsDiff(a, b)}, dequantized ${maxAbsDiff(c, b)}`);
    expectClose(a, b, WEBGPU_VS_WASM, 'webgpu vs wasm prefill logits');
    expectClose(c, b, WEBGPU_VS_WASM, 'dequantized vs MatMulNBits prefill logits (wasm)');
  }, 120_000);

  it('greedy tokens are the same on all three', async () => {
    const g = await greedy(ort, gpu, ids, 4);
    expect(g).toHaveLength(4);
    expect(await greedy(ort, cpu, ids, 4)).toEqual(g);
    expect(await greedy(ort, cpuDequantized, ids, 4)).toEqual(g);
  }, 120_000);
});
