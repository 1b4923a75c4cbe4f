// src/model/external-data.ts on the builder replica (tests/fixtures/replicas/builder: every weight in
// model.onnx_data, 19 tensors written back to back by onnx.save_model): inlining makes each tensor a view of
// its chunk at the offset its reference names, the views tile the whole file; moving them out again and
// back is the identity; a missing chunk or a reference past its end is a ModelFormatError naming the tensor.
// (End to end, through scripts/quantize-model.ts and onnxruntime-web: tests/unit/scripts/replica.test.ts.)
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelFormatError } from '../../../src/errors.ts';
import { inlineExternalData, moveToExternalData } from '../../../src/model/external-data.ts';
import {
  decodeModel,
  encodeModel,
  graphOf,
  initializersOf,
  isExternal,
  type ModelProto,
} from '../../../src/model/onnx-io.ts';
import { FIXTURES_DIR } from '../../helpers/fixtures.ts';

const dir = join(FIXTURES_DIR, 'replicas/builder');
const graph = () => decodeModel(readFileSync(join(dir, 'model.onnx')));
const data = new Uint8Array(readFileSync(join(dir, 'model.onnx_data')));
const chunks = new Map([['model.onnx_data', data]]);
const bytesOf = (m: ModelProto) =>
  new Map(initializersOf(graphOf(m)).map((t) => [t.name, Buffer.from(t.rawData ?? [])]));

describe('inlineExternalData / moveToExternalData', () => {
  it('inlines views of the chunk at each offset; moving out and back is the identity', () => {
    const m = graph();
    const ext = initializersOf(graphOf(m)).filter(isExternal);
    expect(ext).toHaveLength(19);
    const inl = inlineExternalData(m, chunks);
    expect(initializersOf(graphOf(inl)).filter(isExternal)).toHaveLength(0);
    let covered = 0;
    for (const t of initializersOf(graphOf(inl))) {
      const was = ext.find((e) => e.name === t.name);
      if (!was) continue;
      const off = Number(was.externalData.find((e) => e.key === 'offset')?.value ?? 0);
      expect(t.rawData!.buffer).toBe(data.buffer); // a view, not a copy
      expect(t.rawData!.byteOffset - data.byteOffset).toBe(off);
      covered += t.rawData!.byteLength;
    }
    expect(covered).toBe(data.byteLength); // save_external wrote them back to back
    expect(initializersOf(graphOf(m)).filter(isExternal)).toHaveLength(ext.length); // input untouched

    const out = moveToExternalData(inl, 'x.onnx_data');
    expect(out.tensors).toBe(ext.length); // the same tensors (>= 64 bytes) go out
    expect(out.bytes).toBe(data.byteLength);
    const file = Buffer.concat(out.parts);
    const again = inlineExternalData(decodeModel(encodeModel(out.model)), new Map([['x.onnx_data', file]]));
    expect(bytesOf(again)).toEqual(bytesOf(inl));
  });

  it('a missing chunk or a tensor past the end of its chunk: ModelFormatError naming the tensor', () => {
    const m = graph();
    expect(() => inlineExternalData(m, new Map())).toThrow(ModelFormatError);
    expect(() => inlineExternalData(m, new Map())).toThrow(/has its data in "model\.onnx_data"/);
    const short = new Map([['model.onnx_data', data.subarray(0, data.byteLength - 1)]]);
    let err: unknown;
    try {
      inlineExternalData(m, short);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ModelFormatError);
    const last = initializersOf(graphOf(m)).filter(isExternal).at(-1)!;
    expect((err as ModelFormatError).data).toMatchObject({ tensor: last.name, size: data.byteLength - 1 });
  });
});
