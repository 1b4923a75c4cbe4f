/**
 * Gate training learns to route (src/train/gate-train.ts over gate-model.ts): two frozen example adapters,
 * weblora-shout (continuations in upper case) and weblora-romeo (ROMEO's voice), and data mixing both
 * behaviours by style — "SPEAKER:\nline\n" → next line UPPER-CASED, and "ROMEO:\nline\n" → ROMEO's next line
 * as written — drawn from tinyshakespeare (data/). Held-out examples come from other speeches.
 * Metric, before (zero gates = uniform mix) and after training: the mean gate probability of each style's
 * own adapter on its completion tokens (all 6 layers), and the held-out completion loss per style.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { TextTokenizer } from '../../../src/engine/tokenizer.ts';
import { type Example, parseTrainData } from '../../../src/train/data.ts';
import { CpuGatedModel } from '../../../src/train/gate-model.ts';
import { gateEvalLoss, routingShare, trainGates, zeroGates } from '../../../src/train/gate-train.ts';
import { loraFromPeft } from '../../../src/train/lora.ts';
import { MODEL_DIR, REPO_ROOT } from '../../helpers/fixtures.ts';
import { readExample } from '../../helpers/gates.ts';
import { defaultWeights } from './helpers.ts';

const read = (p: string) => readFileSync(p, 'utf8');
const CORPUS = join(REPO_ROOT, 'data/tinyshakespeare.txt');
const SPEAKER = /^([A-Z][A-Za-z ]+):$/;

/** (speaker, line, next line) triples of verse lines within one speech. */
function pairs(text: string): { who: string; a: string; b: string }[] {
  const out: { who: string; a: string; b: string }[] = [];
  for (const block of text.split('\n\n')) {
    const lines = block.split('\n');
    const who = SPEAKER.exec(lines[0] ?? '')?.[1];
    if (!who) continue;
    for (let i = 1; i + 1 < lines.length; i++) {
      const a = lines[i]!;
      const b = lines[i + 1]!;
      if (a.length >= 20 && b.length >= 20 && a.length <= 48 && b.length <= 48) out.push({ who, a, b });
    }
  }
  return out;
}

function data(text: string, per: number) {
  const all = pairs(text);
  const romeo = all.filter((p) => p.who === 'ROMEO').slice(0, per);
  const other = all.filter((p) => p.who !== 'ROMEO' && p.who !== 'JULIET');
  const step = Math.floor(other.length / per);
  const shout = Array.from({ length: per }, (_, i) => other[i * step]!);
  const line = (prompt: string, completion: string) => JSON.stringify({ prompt, completion });
  return {
    shout: shout.map((p) => line(`${p.who}:\n`, `${p.b.toUpperCase()}\n`)),
    romeo: romeo.map((p) => line('ROMEO:\n', `${p.b}\n`)),
  };
}

describe('gate training routes each style to its adapter', () => {
  test('shout + romeo: held-out routing share and loss before / after', async () => {
    const tok = TextTokenizer.fromJSON(
      JSON.parse(read(join(MODEL_DIR, 'tokenizer.json'))),
      JSON.parse(read(join(MODEL_DIR, 'tokenizer_config.json'))),
    );
    const corpus = read(CORPUS);
    const cut = Math.floor(corpus.length * 0.5);
    const train = data(corpus.slice(0, cut), 32);
    const held = data(corpus.slice(cut), 8);
    const ex = (lines: string[]): Example[] =>
      parseTrainData(
        lines.join('\n'),
        'jsonl',
        { ...tok, encode: (s) => tok.encode(s), eosTokenId: null },
        64,
      ).examples;
    const trainEx: Example[] = [];
    const a = ex(train.shout);
    const b = ex(train.romeo);
    for (let i = 0; i < Math.max(a.length, b.length); i++)
      trainEx.push(...(a[i] ? [a[i]!] : []), ...(b[i] ? [b[i]!] : []));
    const heldShout = ex(held.shout);
    const heldRomeo = ex(held.romeo);
    expect(heldShout.length).toBe(8);
    expect(heldRomeo.length).toBe(8);

    const w = defaultWeights('fp32');
    const experts = ['weblora-shout', 'weblora-romeo'].map((name) => {
      const { cfg, tensors } = readExample(name);
      return { modules: loraFromPeft(cfg, tensors, w), weight: 1 };
    });
    const gates = zeroGates([0, 1, 2, 3, 4, 5], 2, w.config.C);
    const model = new CpuGatedModel(w, experts, gates);
    const pad = tok.eosTokenId;
    const measure = () => ({
      shoutShare: routingShare(model, heldShout, pad, 0),
      romeoShare: routingShare(model, heldRomeo, pad, 1),
      shoutLoss: gateEvalLoss(model, heldShout, pad),
      romeoLoss: gateEvalLoss(model, heldRomeo, pad),
    });
    // Reference: every gate forced to one expert (b = ±20 → probabilities 1 − 2e-18 and 2e-18).
    const forced = (e: number) => {
      for (const g of gates) g.b.set(e === 0 ? [20, -20] : [-20, 20]);
      const r = { shout: gateEvalLoss(model, heldShout, pad), romeo: gateEvalLoss(model, heldRomeo, pad) };
      for (const g of gates) g.b.fill(0);
      return r;
    };
    const onlyShout = forced(0);
    const onlyRomeo = forced(1);
    const before = measure();
    const t0 = performance.now();
    const log = await trainGates(model, trainEx, pad, { steps: 40, lr: 5e-2, batchSize: 4, seed: 1 });
    const ms = performance.now() - t0;
    const after = measure();
    const fmt = (o: Record<string, number>) =>
      Object.entries(o)
        .map(([k, v]) => `${k} ${v.toFixed(3)}`)
        .join(', ');
    console.log(
      `gate training: ${trainEx.length} examples, ${log.length} steps in ${(ms / 1000).toFixed(1)} s ` +
        `(loss ${log[0]!.loss.toFixed(3)} -> ${log.at(-1)!.loss.toFixed(3)})\n  before: ${fmt(before)}\n  after:  ${fmt(after)}\n` +
        `  reference held-out losses, all gates forced: shout only ${fmt(onlyShout)}; romeo only ${fmt(onlyRomeo)}`,
    );
    expect(before.shoutShare).toBeCloseTo(0.5, 6);
    expect(before.romeoShare).toBeCloseTo(0.5, 6);
    expect(after.shoutShare).toBeGreaterThan(0.75);
    expect(after.romeoShare).toBeGreaterThan(0.75);
    expect(after.shoutLoss).toBeLessThan(before.shoutLoss);
    expect(after.romeoLoss).toBeLessThan(before.romeoLoss);
  }, 600_000);
});
