// Model package naming: dtype file names (transformers.js), external-data chunk counts from config.json,
// the chunk names, the external_data references read from a graph, and Hugging Face URL normalisation.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { decodeModel, externalDataLocations } from '../../../src/model/onnx-io.ts';
import {
  externalDataChunksOf,
  externalDataFileNames,
  isModelDtype,
  MODEL_DTYPES,
  modelFileName,
  normalizeModelUrl,
} from '../../../src/model/package.ts';

describe('dtype files', () => {
  it('follow transformers.js naming', () => {
    expect(MODEL_DTYPES.map(modelFileName)).toEqual([
      'onnx/model.onnx',
      'onnx/model_fp16.onnx',
      'onnx/model_q4.onnx',
      'onnx/model_q4f16.onnx',
    ]);
    expect(isModelDtype('q4f16')).toBe(true);
    expect(isModelDtype('int8')).toBe(false);
  });
});

describe('external data', () => {
  const cfg = (v: unknown) => ({ 'transformers.js_config': { use_external_data_format: v } });
  it('reads the chunk count as number, boolean or per-file object; null when config is silent', () => {
    expect(externalDataChunksOf(cfg(2), 'onnx/model.onnx')).toBe(2);
    expect(externalDataChunksOf(cfg(true), 'onnx/model.onnx')).toBe(1);
    expect(externalDataChunksOf(cfg(false), 'onnx/model.onnx')).toBe(0);
    expect(externalDataChunksOf(cfg({ 'model_q4f16.onnx': 3 }), 'onnx/model_q4f16.onnx')).toBe(3);
    expect(externalDataChunksOf(cfg({ model_fp16: true }), 'onnx/model_fp16.onnx')).toBe(1);
    expect(externalDataChunksOf(cfg({ model_fp16: true }), 'onnx/model.onnx')).toBeNull();
    expect(externalDataChunksOf({}, 'onnx/model.onnx')).toBeNull();
    expect(externalDataChunksOf(cfg('yes'), 'onnx/model.onnx')).toBeNull();
  });
  it('names chunks <file>_data, <file>_data_1, …', () => {
    expect(externalDataFileNames('onnx/model_q4.onnx', 3)).toEqual([
      'onnx/model_q4.onnx_data',
      'onnx/model_q4.onnx_data_1',
      'onnx/model_q4.onnx_data_2',
    ]);
    expect(externalDataFileNames('onnx/model.onnx', 0)).toEqual([]);
  });
  it('reads the names a graph references (builder replica) and none from an inline graph', () => {
    const dir = 'tests/fixtures/replicas/';
    expect(externalDataLocations(decodeModel(readFileSync(`${dir}builder/model.onnx`)))).toEqual([
      'model.onnx_data',
    ]);
    expect(externalDataLocations(decodeModel(readFileSync(`${dir}optimum/model.onnx`)))).toEqual([]);
  });
});

describe('normalizeModelUrl', () => {
  const R = 'https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/resolve/';
  it.each([
    ['https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct', `${R}main/`],
    ['https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/', `${R}main/`],
    ['  https://hf.co/HuggingFaceTB/SmolLM2-135M-Instruct?x=1#readme ', `${R}main/`],
    ['https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/tree/main', `${R}main/`],
    ['https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/tree/abc123/sub', `${R}abc123/sub/`],
    ['https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/blob/v1/sub/', `${R}v1/sub/`],
    ['https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/resolve/main', `${R}main/`],
    [`${R}refs%2Fpr%2F1/`, `${R}refs%2Fpr%2F1/`],
  ])('%s → %s', (input, want) => {
    expect(normalizeModelUrl(input)).toBe(want);
  });
  it('leaves other hosts and relative paths alone (trailing slash added)', () => {
    expect(normalizeModelUrl('https://cdn.example.com/models/x')).toBe('https://cdn.example.com/models/x/');
    expect(normalizeModelUrl('/models/weblora-shakespeare/')).toBe('/models/weblora-shakespeare/');
    expect(normalizeModelUrl('models/tiny')).toBe('models/tiny/');
    expect(normalizeModelUrl('https://huggingface.co/datasets/a/b')).toBe(
      'https://huggingface.co/datasets/a/b/',
    );
  });
});
