/**
 * Validation loss of the committed ONNX model files, measured by our TypeScript stack
 * (@huggingface/tokenizers + onnxruntime-web on its Node/wasm backend), in nats per character.
 * Same protocol as scripts/py/train.py: validation = last 10% of tinyshakespeare's characters,
 * strided windows of 256 tokens with stride 128 so every scored token sees >= 128 tokens of context,
 * summed token NLL divided by the characters those tokens cover.
 *   npm run eval -- [modelDir] [--files model.onnx,model_q4.onnx] [--max-windows N] [--json out.json]
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Tokenizer } from '@huggingface/tokenizers';
import * as ort from 'onnxruntime-web';

const args = process.argv.slice(2);
const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
const flag = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const modelDir = args[0] && !args[0].startsWith('--') ? args[0] : 'public/models/weblora-shakespeare';
const files = (flag('--files') ?? 'model.onnx,model_q4.onnx').split(',');
const maxWindows = Number(flag('--max-windows') ?? Number.POSITIVE_INFINITY);
const jsonOut = flag('--json');
const WINDOW = 256;
const STRIDE = 128;
const BATCH = 8;

/** [start, first scored offset] per window; identical to train.py's val_windows. */
export function valWindows(n: number, window = WINDOW, stride = STRIDE): [number, number][] {
  const out: [number, number][] = [];
  let covered = 1;
  let s = 0;
  for (;;) {
    s = Math.min(s, Math.max(0, n - window));
    out.push([s, Math.max(covered - s, 1)]);
    covered = s + window;
    if (covered >= n) return out;
    s += stride;
  }
}

async function evalFile(path: string, ids: number[], config: Record<string, number>, maxWindows: number) {
  const session = await ort.InferenceSession.create(readFileSync(path), { executionProviders: ['wasm'] });
  const L = config.num_hidden_layers!;
  const kvHeads = config.num_key_value_heads!;
  const headDim = config.head_dim ?? config.hidden_size! / config.num_attention_heads!;
  const V = config.vocab_size!;
  let wins = valWindows(ids.length);
  if (wins.length > maxWindows) wins = wins.slice(0, maxWindows);
  let nll = 0;
  let scored = 0;
  const t0 = performance.now();
  for (let w = 0; w < wins.length; w += BATCH) {
    const chunk = wins.slice(w, w + BATCH);
    const B = chunk.length;
    const inputIds = new BigInt64Array(B * WINDOW);
    const pos = new BigInt64Array(B * WINDOW);
    chunk.forEach(([s], b) => {
      for (let t = 0; t < WINDOW; t++) {
        inputIds[b * WINDOW + t] = BigInt(ids[s + t]!);
        pos[b * WINDOW + t] = BigInt(t);
      }
    });
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', inputIds, [B, WINDOW]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(B * WINDOW).fill(1n), [B, WINDOW]),
      position_ids: new ort.Tensor('int64', pos, [B, WINDOW]),
    };
    for (let i = 0; i < L; i++) {
      for (const kv of ['key', 'value']) {
        feeds[`past_key_values.${i}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [
          B,
          kvHeads,
          0,
          headDim,
        ]);
      }
    }
    const out = await session.run(feeds, ['logits']);
    const logits = out.logits!.data as Float32Array; // (B, T, V)
    chunk.forEach(([s, first], b) => {
      for (let t = first; t < WINDOW; t++) {
        // logits at position t-1 predict token t
        const row = logits.subarray((b * WINDOW + t - 1) * V, (b * WINDOW + t) * V);
        let max = Number.NEGATIVE_INFINITY;
        for (let v = 0; v < V; v++) max = Math.max(max, row[v]!);
        let sum = 0;
        for (let v = 0; v < V; v++) sum += Math.exp(row[v]! - max);
        nll += Math.log(sum) + max - row[ids[s + t]!]!;
        scored++;
      }
    });
    for (const t of Object.values(out)) t.dispose();
    if (process.stderr.isTTY)
      process.stderr.write(`\r${path}: ${Math.min(w + BATCH, wins.length)}/${wins.length} windows`);
  }
  await session.release();
  return { nll, scored, seconds: (performance.now() - t0) / 1000 };
}

export interface ValLossRow {
  file: string;
  bytes: number;
  tokens: number;
  chars: number;
  natsPerChar: number;
  natsPerToken: number;
  seconds: number;
}

/** Validation loss of each ONNX file in `dir/onnx/` (missing files are skipped). */
export async function evalValLoss(
  dir: string,
  onnxFiles: string[],
  windows = Number.POSITIVE_INFINITY,
): Promise<ValLossRow[]> {
  ort.env.wasm.numThreads = 1;
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  const tokenizer = new Tokenizer(
    JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')),
    JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')),
  );
  const text = readFileSync(new URL('../data/tinyshakespeare.txt', import.meta.url), 'utf8');
  const val = text.slice(Math.floor(text.length * 0.9));
  const ids = tokenizer.encode(val, { add_special_tokens: false }).ids;
  const firstChars = tokenizer.decode(ids.slice(0, 1)).length;
  const rows: ValLossRow[] = [];
  for (const f of onnxFiles) {
    const path = join(dir, 'onnx', f);
    let size: number;
    try {
      size = statSync(path).size;
    } catch {
      continue;
    }
    const r = await evalFile(path, ids, config, windows);
    // chars covered by the scored tokens: all but the first token when every window is scored
    const chars =
      r.scored === ids.length - 1
        ? val.length - firstChars
        : tokenizer.decode(ids.slice(1, r.scored + 1)).length;
    rows.push({
      file: f,
      bytes: size,
      tokens: r.scored,
      chars,
      natsPerChar: r.nll / chars,
      natsPerToken: r.nll / r.scored,
      seconds: r.seconds,
    });
  }
  return rows;
}

async function main() {
  const rows = await evalValLoss(modelDir, files, maxWindows);
  if (process.stderr.isTTY) process.stderr.write('\n');
  console.table(
    rows.map((r) => ({
      ...r,
      natsPerChar: r.natsPerChar.toFixed(4),
      natsPerToken: r.natsPerToken.toFixed(4),
      MB: (r.bytes / 1e6).toFixed(2),
      seconds: r.seconds.toFixed(1),
    })),
  );
  if (rows.length === 2)
    console.log(`q4 - fp32: ${(rows[1]!.natsPerChar - rows[0]!.natsPerChar).toFixed(4)} nats/char`);
  if (jsonOut) writeFileSync(jsonOut, `${JSON.stringify(rows, null, 2)}\n`);
}

if (isMain) await main();
