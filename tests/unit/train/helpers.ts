/**
 * Shared loading for the trainer tests: the default model package (fp32 or q4) as frozen weights, the
 * peft-adapter fixture as LoRA modules, the lora-grads / adamw-trajectory fixtures, and the relative
 * error ‖g − g*‖/‖g*‖. Loading is cached per file (the fp32 model decodes in ~0.3 s). No assertions here.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeModel } from '../../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../../src/model/package.ts';
import type { FrozenWeights, LoraModule } from '../../../src/train/cpu-model.ts';
import { loraFromPeft } from '../../../src/train/lora.ts';
import { decoderConfig, loadFrozenWeights } from '../../../src/train/weights.ts';
import {
  assertFresh,
  FIXTURES_DIR,
  loadPeftFixture,
  loadSafetensorsFile,
  MODEL_DIR,
  MODEL_PATH,
  Q4_PATH,
} from '../../helpers/fixtures.ts';

const cache = new Map<string, FrozenWeights>();

export function defaultWeights(which: 'fp32' | 'q4'): FrozenWeights {
  let w = cache.get(which);
  if (!w) {
    const cfg = decoderConfig(
      parseModelConfig(JSON.parse(readFileSync(join(MODEL_DIR, 'config.json'), 'utf8'))),
    );
    const model = decodeModel(new Uint8Array(readFileSync(which === 'q4' ? Q4_PATH : MODEL_PATH)));
    w = loadFrozenWeights(model, cfg);
    cache.set(which, w);
  }
  return w;
}

/** peft-adapter as fresh trainable modules (new copies every call). */
export function peftAdapterModules(w: FrozenWeights): LoraModule[] {
  const fx = loadPeftFixture('peft-adapter');
  return loraFromPeft(fx.config, fx.st.tensors, w);
}

export function loadFixture(name: 'lora-grads' | 'adamw-trajectory') {
  const st = loadSafetensorsFile(join(FIXTURES_DIR, `${name}.safetensors`));
  assertFresh(st, `tests/fixtures/${name}.safetensors`);
  return st;
}

export { rand, relErr } from '../../helpers/tiny-decoder.ts';

/** Central finite differences of `loss` with respect to every element of `x` (restored afterwards). */
export function finiteDiff(x: Float64Array | Float32Array, loss: () => number, h = 1e-5): Float64Array {
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const x0 = x[i]!;
    x[i] = x0 + h;
    const hi = x[i]! - x0;
    const lp = loss();
    x[i] = x0 - h;
    const lo = x0 - x[i]!;
    const lm = loss();
    x[i] = x0;
    g[i] = (lp - lm) / (hi + lo);
  }
  return g;
}

/** Σ out·G: a scalar whose gradient with respect to `out` is G. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}
