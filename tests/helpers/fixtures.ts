/**
 * Loader for the PyTorch golden fixtures in tests/fixtures/ (made by scripts/py/fixtures.py; keys listed in
 * tests/fixtures/README.md). Every fixture file records the sha256 of the model.onnx it was made for;
 * `assertFresh` turns a mismatch into one clear "fixtures are stale" error instead of a wall of numeric
 * failures. The model folder is public/models/weblora-shakespeare unless WEBLORA_TEST_MODEL_DIR says
 * otherwise. Node-only (reads files); not for browser tests.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type PeftLoraConfig, parsePeftConfig } from '../../src/adapters/peft.ts';
import {
  parseSafetensors,
  readFloat32,
  readInt32,
  type Safetensors,
  type TensorView,
} from '../../src/adapters/safetensors.ts';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** Override with WEBLORA_TEST_FIXTURES_DIR to test fixtures generated elsewhere (with a matching model dir). */
export const FIXTURES_DIR = resolve(REPO_ROOT, process.env.WEBLORA_TEST_FIXTURES_DIR ?? 'tests/fixtures');
export const MODEL_DIR = resolve(
  REPO_ROOT,
  process.env.WEBLORA_TEST_MODEL_DIR ?? 'public/models/weblora-shakespeare',
);
export const MODEL_PATH = join(MODEL_DIR, 'onnx/model.onnx');
export const Q4_PATH = join(MODEL_DIR, 'onnx/model_q4.onnx');
export const FIXTURE_FORMAT_VERSION = '1';
export const REGENERATE =
  '/usr/bin/python3 scripts/py/fixtures.py --ckpt <the checkpoint model.onnx was exported from> ' +
  `--model-dir ${MODEL_DIR} --out tests/fixtures`;

/** The adapter fixture folders, each a PEFT adapter with golden logits under its name in golden.safetensors. */
export const ADAPTER_FIXTURES = ['peft-adapter', 'peft-adapter-rslora'] as const;
export type AdapterFixture = (typeof ADAPTER_FIXTURES)[number];

const shaCache = new Map<string, string>();
export function sha256File(path: string): string {
  let h = shaCache.get(path);
  if (!h) {
    h = createHash('sha256').update(readFileSync(path)).digest('hex');
    shaCache.set(path, h);
  }
  return h;
}

export function loadSafetensorsFile(path: string): Safetensors {
  return parseSafetensors(new Uint8Array(readFileSync(path)));
}

/** Throws unless `st` was generated (format version 1) for exactly the model.onnx at `modelPath`. */
export function assertFresh(st: Safetensors, what: string, modelPath = MODEL_PATH): void {
  const v = st.metadata.format_version;
  if (v !== FIXTURE_FORMAT_VERSION) {
    throw new Error(
      `${what}: fixture format_version ${v}, this loader reads ${FIXTURE_FORMAT_VERSION}; regenerate with: ${REGENERATE}`,
    );
  }
  const want = st.metadata.model_sha256;
  const have = sha256File(modelPath);
  if (want !== have) {
    throw new Error(
      `fixtures are stale: ${what} was made for model.onnx sha256 ${want}, but ${modelPath} has ${have}; ` +
        `regenerate with: ${REGENERATE}`,
    );
  }
}

export function tensor(st: Safetensors, name: string): TensorView {
  const t = st.tensors.get(name);
  if (!t)
    throw new Error(
      `fixture tensor "${name}" is missing (have: ${[...st.tensors.keys()].slice(0, 8).join(', ')}...)`,
    );
  return t;
}
export const f32 = (st: Safetensors, name: string): Float32Array => readFloat32(tensor(st, name));
export const i32 = (st: Safetensors, name: string): number[] => Array.from(readInt32(tensor(st, name)));

export interface GoldenSeq {
  tokens: number[];
  /** Logits [T, V] row-major, per variant: 'base' or an adapter fixture name. */
  logits: Record<'base' | AdapterFixture, Float32Array>;
  greedy: number[];
  /** top1 - top2 logit gap at each greedy step (how robust the expected token is). */
  greedyMargin: Float32Array;
}

export interface Golden {
  metadata: Record<string, string>;
  vocab: number;
  seqs: GoldenSeq[];
}

export function loadGolden(): Golden {
  const st = loadSafetensorsFile(join(FIXTURES_DIR, 'golden.safetensors'));
  assertFresh(st, 'tests/fixtures/golden.safetensors');
  const seqs: GoldenSeq[] = [];
  for (let j = 0; st.tensors.has(`seq${j}.tokens`); j++) {
    seqs.push({
      tokens: i32(st, `seq${j}.tokens`),
      logits: {
        base: f32(st, `base.seq${j}.logits`),
        'peft-adapter': f32(st, `peft-adapter.seq${j}.logits`),
        'peft-adapter-rslora': f32(st, `peft-adapter-rslora.seq${j}.logits`),
      },
      greedy: i32(st, `base.seq${j}.greedy`),
      greedyMargin: f32(st, `base.seq${j}.greedy_margin`),
    });
  }
  const vocab = tensor(st, 'base.seq0.logits').shape[1]!;
  return { metadata: st.metadata, vocab, seqs };
}

export interface PeftFixture {
  config: PeftLoraConfig;
  configJson: string;
  bytes: Uint8Array;
  st: Safetensors;
}

export function loadPeftFixture(name: AdapterFixture): PeftFixture {
  const dir = join(FIXTURES_DIR, name);
  const configJson = readFileSync(join(dir, 'adapter_config.json'), 'utf8');
  const bytes = new Uint8Array(readFileSync(join(dir, 'adapter_model.safetensors')));
  return { config: parsePeftConfig(configJson), configJson, bytes, st: parseSafetensors(bytes) };
}

export const modelExists = (): boolean => existsSync(MODEL_PATH);
