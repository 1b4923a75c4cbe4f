// prepareDecoderGraph (src/model/prepare-decoder.ts), the graph preparation engine/load.ts and the bench's
// loops share: per backend, the passes it applies and their order (dequantize on wasm, then the fusion with
// fuseOptionsFor(backend), then the greedy head), byte for byte against the passes applied by hand, and
// what `fuse: false` / `greedyHead: false` leave out. Graph structure only: the passes' numerics are
// tested in fuse-decoder.test.ts, greedy-head.test.ts and dequantize.test.ts.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { wasmGraphOf } from '../../../src/model/dequantize.ts';
import { fuseDecoder, fuseOptionsFor } from '../../../src/model/fuse-decoder.ts';
import { ARGMAX_OUTPUT, withGreedyHead } from '../../../src/model/greedy-head.ts';
import {
  decodeModel,
  encodeModel,
  graphOf,
  type ModelProto,
  nodesOf,
  outputsOf,
} from '../../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../../src/model/package.ts';
import { prepareDecoderGraph } from '../../../src/model/prepare-decoder.ts';
import { DEFAULT_MODEL } from './graph-builders.ts';

const PKG = DEFAULT_MODEL.slice(0, DEFAULT_MODEL.lastIndexOf('/onnx/'));
const config = parseModelConfig(JSON.parse(readFileSync(`${PKG}/config.json`, 'utf8')));
const q4 = decodeModel(new Uint8Array(readFileSync(`${PKG}/onnx/model_q4.onnx`)));
const count = (m: ModelProto, op: string) => nodesOf(graphOf(m)).filter((n) => n.opType === op).length;
const hasArgmax = (m: ModelProto) => outputsOf(graphOf(m)).some((o) => o.name === ARGMAX_OUTPUT);
/** Byte equality of the encoded graphs (Buffer.equals: a deep toEqual of ~20 MB is slow and memory-hungry). */
const sameBytes = (a: ModelProto, b: ModelProto) => Buffer.from(encodeModel(a)).equals(encodeModel(b));
const FUSED = { norms: 13, skipNorms: 12, rotary: 12, attention: 6, scaleFolds: 6 };

describe('prepareDecoderGraph on the default q4 model', () => {
  it('wasm: dequantized, fused with MatMul attention, greedy head; = the passes by hand', () => {
    const p = prepareDecoderGraph(q4, config, 'wasm');
    expect(p.fused).toEqual(FUSED);
    expect(p.dequantized?.nodes).toBe(42); // 6 layers × 7 projections (the lm_head is not 4-bit)
    expect(count(p.model, 'MatMulNBits')).toBe(0);
    expect(count(p.model, 'Einsum')).toBe(0);
    expect(count(p.model, 'RotaryEmbedding')).toBe(12);
    expect(hasArgmax(p.model)).toBe(true);
    const byHand = withGreedyHead(fuseDecoder(wasmGraphOf(q4).model, config, fuseOptionsFor('wasm')).model);
    expect(sameBytes(p.model, byHand.model)).toBe(true);
  });

  it('webgpu: 4-bit kept, fused with Einsum scores + MatMul mix, greedy head; = the passes by hand', () => {
    const p = prepareDecoderGraph(q4, config, 'webgpu');
    expect(p.fused).toEqual(FUSED);
    expect(p.dequantized).toBeNull();
    expect(count(p.model, 'MatMulNBits')).toBe(count(q4, 'MatMulNBits'));
    expect(count(p.model, 'Einsum')).toBe(6);
    const byHand = withGreedyHead(fuseDecoder(q4, config, fuseOptionsFor('webgpu')).model);
    expect(sameBytes(p.model, byHand.model)).toBe(true);
  });

  it('fuse: false and greedyHead: false leave those passes out (bench loop (f))', () => {
    const p = prepareDecoderGraph(q4, config, 'webgpu', { fuse: false, greedyHead: false });
    expect(p.fused).toBeNull();
    expect(p.model).toBe(q4); // nothing to do on webgpu: the file's graph itself
    const w = prepareDecoderGraph(q4, config, 'wasm', { fuse: false });
    expect(w.fused).toBeNull();
    expect(count(w.model, 'RotaryEmbedding')).toBe(0);
    expect(count(w.model, 'Expand')).toBe(count(q4, 'Expand'));
    expect(hasArgmax(w.model)).toBe(true);
  });
});
