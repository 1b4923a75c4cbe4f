// Checkpoint records read back from IndexedDB are validated before resume trusts them
// (src/train/checkpoints.ts validateCheckpoint): a well-formed record passes with float32 or float64
// AdamW moments; wrong versions, ids, sizes, missing moments or a cursor past the run are
// TrainCheckpointError 'corrupt'. The IndexedDB round trip itself is covered by the browser train-api test.
import { describe, expect, it } from 'vitest';
import { TrainCheckpointError } from '../../../src/errors.ts';
import { type CheckpointRecord, checkpointInfo, validateCheckpoint } from '../../../src/train/checkpoints.ts';
import { planSteps, resolveTrainOptions } from '../../../src/train/trainer.ts';

function record(): CheckpointRecord {
  const options = planSteps(
    resolveTrainOptions(
      { name: 'n', data: '', rank: 2, layers: [1], targets: ['q_proj', 'v_proj'], steps: 10 },
      { numLayers: 2, maxPositions: 64 },
    ),
    5,
  );
  const mod = (module: 'q_proj' | 'v_proj') => ({
    path: `model.layers.1.self_attn.${module}`,
    layer: 1,
    module,
    R: 2,
    A: new Float32Array(2 * 8),
    B: new Float32Array(4 * 2),
  });
  const modules = [mod('q_proj'), mod('v_proj')];
  const moments = () => modules.flatMap((m) => [new Float64Array(m.A.length), new Float64Array(m.B.length)]);
  return {
    version: 1,
    trainId: 'id',
    name: 'n',
    modelId: 'm',
    overwrite: false,
    options,
    data: 'hello',
    dataSha256: 'x',
    dataExamples: 1,
    cursor: { step: 3, micro: 3, initialEvalLoss: 2, lastLoss: 1, lastEvalLoss: 1.5 },
    state: { step: 3, modules, adam: { m: moments(), v: moments() } },
    savedAt: 1,
  };
}

function corrupt(mutate: (r: CheckpointRecord) => void): void {
  const r = record();
  mutate(r);
  let err: unknown;
  try {
    validateCheckpoint('id', r);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(TrainCheckpointError);
  expect((err as TrainCheckpointError).data.reason).toBe('corrupt');
}

describe('validateCheckpoint', () => {
  it('accepts a well-formed record (float64 or float32 moments) and sizes it', () => {
    expect(validateCheckpoint('id', record()).cursor.step).toBe(3);
    const r = record();
    r.state.adam = {
      m: r.state.adam!.m.map((x) => Float32Array.from(x)),
      v: r.state.adam!.v.map((x) => Float32Array.from(x)),
    };
    expect(() => validateCheckpoint('id', r)).not.toThrow();
    const info = checkpointInfo(record());
    expect(info).toMatchObject({ trainId: 'id', step: 3, totalSteps: 10 });
    // 2 modules × (16 + 8) floats × 4 bytes, moments 2 × 2 × 24 × 8 bytes, data 5 × 2 bytes.
    expect(info.bytes).toBe(2 * 24 * 4 + 4 * 24 * 8 + 10);
  });

  it('refuses wrong versions, ids, sizes and cursors', () => {
    corrupt((r) => {
      (r as { version: number }).version = 2;
    });
    corrupt((r) => {
      r.trainId = 'other';
    });
    corrupt((r) => {
      r.state.modules[0]!.A = new Float32Array(15);
    });
    corrupt((r) => {
      (r.state.modules[0] as { A: unknown }).A = [0, 0];
    });
    corrupt((r) => {
      r.state.modules.pop();
    });
    corrupt((r) => {
      r.state.adam!.v[1] = new Float64Array(3);
    });
    corrupt((r) => {
      r.state.adam = null;
    });
    corrupt((r) => {
      r.cursor.step = 11;
      r.state.step = 11;
    });
    corrupt((r) => {
      r.state.step = 2;
    });
    corrupt((r) => {
      (r as { data: unknown }).data = 5;
    });
  });
});
