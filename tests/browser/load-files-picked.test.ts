// fetchFiles (engine/load-files.ts) on user-picked files — the path the demo's "Local folder…" and
// <weblora-chat>.modelFiles load through — in real Chromium: only the chosen dtype's ONNX file and the
// JSON files are read. A folder holding every dtype (hundreds of MB each for hub models) must not be
// read whole to learn which dtypes it has: here onnx/model.onnx cannot be read at all, and a q4 load
// still succeeds, while asking for fp32 reaches that file (the read error propagates).
import { beforeAll, describe, expect, it } from 'vitest';
import { fetchFiles } from '../../src/engine/load-files.ts';
import type { LoadProgress } from '../../src/engine/types.ts';

const BASE = '/models/weblora-shakespeare/';
const READ = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'onnx/model_q4.onnx',
];

class UnreadableFile extends File {
  override arrayBuffer(): Promise<ArrayBuffer> {
    return Promise.reject(new DOMException('this file may not be read', 'NotReadableError'));
  }
}

function picked(file: File, rel: string): File {
  Object.defineProperty(file, 'webkitRelativePath', { value: `weblora-shakespeare/${rel}` });
  return file;
}

const files: File[] = [];
let bytes = 0;

beforeAll(async () => {
  for (const path of READ) {
    const body = new Uint8Array(await (await fetch(BASE + path)).arrayBuffer());
    bytes += body.byteLength;
    files.push(picked(new File([body], path.split('/').at(-1)!), path));
  }
  files.push(picked(new UnreadableFile([new Uint8Array(8)], 'model.onnx'), 'onnx/model.onnx'));
});

describe('fetchFiles on picked files', () => {
  it('reads only the JSON files and the chosen dtype (q4 by default), never the other dtypes', async () => {
    const progress: LoadProgress[] = [];
    const got = await fetchFiles(files, undefined, undefined, (p) => progress.push(p));
    expect(got.dtype).toBe('q4');
    expect(got.modelFile).toBe('onnx/model_q4.onnx');
    expect([...got.files.keys()].sort()).toEqual([...READ].sort());
    expect(got.externalData).toEqual([]);
    expect(progress.at(-1)).toMatchObject({ stage: 'download', loaded: bytes, total: bytes });
  });

  it('reads the fp32 file when fp32 is asked for (here: its read error propagates)', async () => {
    const err = await fetchFiles(files, 'fp32', undefined, () => {}).then(
      () => null,
      (e: unknown) => e,
    );
    expect((err as DOMException).name).toBe('NotReadableError');
  });
});
