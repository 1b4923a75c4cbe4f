// decodeModel/encodeModel: zero-copy weights (raw_data are views of the input buffer), a faithful
// round trip, and ModelFormatError for bytes that are not a usable ModelProto.
import { describe, expect, it } from 'vitest';
import { ModelFormatError } from '../../../src/errors.ts';
import {
  decodeModel,
  encodeModel,
  graphOf,
  initializersOf,
  nodesOf,
  onnx,
} from '../../../src/model/onnx-io.ts';
import { loadDefaultBytes, randn, tinyModel } from './graph-builders.ts';

describe('decodeModel / encodeModel', () => {
  const bytes = loadDefaultBytes();

  it('decodes weights as views of the input buffer (no copy)', () => {
    const m = decodeModel(bytes);
    const inits = initializersOf(graphOf(m));
    expect(inits.length).toBeGreaterThan(40);
    for (const t of inits) {
      expect(t.rawData.byteLength).toBeGreaterThan(0);
      expect(t.rawData.buffer).toBe(bytes.buffer);
    }
  });

  it('round-trips faithfully (same graph and weights; re-encoding is stable)', () => {
    // Not byte-identical to PyTorch's file: protobufjs writes packed/default fields slightly differently.
    const m = decodeModel(bytes);
    const again = encodeModel(m);
    const m2 = decodeModel(again);
    expect(nodesOf(graphOf(m2)).map((n) => n.name)).toEqual(nodesOf(graphOf(m)).map((n) => n.name));
    const a = initializersOf(graphOf(m));
    const b = initializersOf(graphOf(m2));
    expect(b.map((t) => t.name)).toEqual(a.map((t) => t.name));
    for (let i = 0; i < a.length; i++)
      expect(Buffer.from(b[i]!.rawData).equals(Buffer.from(a[i]!.rawData))).toBe(true);
    expect(Buffer.from(encodeModel(m2)).equals(Buffer.from(again))).toBe(true);
  });

  it('rejects truncated bytes with ModelFormatError', () => {
    for (const frac of [0.999, 0.9, 0.5, 0.1, 0.001]) {
      const cut = bytes.subarray(0, Math.floor(bytes.byteLength * frac));
      expect(() => decodeModel(cut), `cut at ${frac}`).toThrow(ModelFormatError);
    }
    try {
      decodeModel(bytes.subarray(0, 1000));
      expect.fail('should throw');
    } catch (e) {
      expect(e).toBeInstanceOf(ModelFormatError);
      expect((e as Error).message).toMatch(/truncated|not a valid ONNX/);
    }
  });

  it('rejects garbage, empty and graph-less bytes with ModelFormatError', () => {
    const garbage = new Uint8Array(randn(4096, 7).buffer);
    expect(() => decodeModel(garbage)).toThrow(ModelFormatError);
    expect(() => decodeModel(new TextEncoder().encode('<html>not a model</html>'))).toThrow(ModelFormatError);
    expect(() => decodeModel(new Uint8Array(0))).toThrow(/empty/);
    const noGraph = onnx.ModelProto.encode(
      onnx.ModelProto.create({ irVersion: 8, producerName: 'x' }),
    ).finish();
    expect(() => decodeModel(noGraph)).toThrow(/no graph/);
  });

  it('decodes a hand-built model', () => {
    const m = tinyModel({
      nodes: [{ op: 'Relu', inputs: ['X'], outputs: ['Y'] }],
      inputs: [{ name: 'X', dims: [2] }],
      outputs: [{ name: 'Y', dims: [2] }],
    });
    expect(nodesOf(graphOf(m))[0]?.opType).toBe('Relu');
  });
});
