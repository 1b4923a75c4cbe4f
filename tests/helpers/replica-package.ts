/**
 * A complete Hugging Face-layout model package built from the layout replicas (tests/fixtures/replicas/),
 * for the loader tests (browser, served by an injected fetch) and the e2e server (Node): config.json with
 * `transformers.js_config.use_external_data_format`, a byte-level tokenizer over the replica's 128-token
 * vocabulary (ids 0..127 = the first 128 byte symbols, eos 0, a chat template), and `onnx/model*.onnx`
 * with its external data optionally split into N chunks (`model.onnx_data`, `model.onnx_data_1`, …: the
 * graph's external_data locations and offsets are rewritten to point into them). Files are read through
 * a `read(path)` callback, so nothing here touches Node APIs.
 */
import { decodeModel, encodeModel, graphOf, initializersOf, isExternal } from '../../src/model/onnx-io.ts';

export type Read = (path: string) => Promise<Uint8Array>;

const enc = new TextEncoder();
const json = (v: unknown): Uint8Array => enc.encode(JSON.stringify(v, null, 2));

/** GPT-2's byte → symbol map, first 128 symbols in id order (as in the default model's tokenizer). */
function byteSymbols(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const sym = new Map<number, string>();
  for (const b of printable) sym.set(b, String.fromCharCode(b));
  let n = 0;
  for (let b = 0; b < 256; b++) if (!sym.has(b)) sym.set(b, String.fromCharCode(256 + n++));
  return Array.from({ length: 128 }, (_, b) => sym.get(b)!);
}

export function replicaTokenizer(): { tokenizer: Uint8Array; tokenizerConfig: Uint8Array } {
  const vocab: Record<string, number> = {};
  byteSymbols().forEach((s, i) => {
    vocab[s] = i;
  });
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: [],
    },
  };
  const tokenizerConfig = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    eos_token: byteSymbols()[0],
    add_bos_token: false,
    model_max_length: 128,
    chat_template:
      "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}",
  };
  return { tokenizer: json(tokenizer), tokenizerConfig: json(tokenizerConfig) };
}

/**
 * Rewrites a graph whose tensors live in one external file (`from`) so they live in `chunks` files
 * named `<modelName>_data`, `<modelName>_data_1`, … split at tensor boundaries.
 */
export function splitExternalData(
  model: Uint8Array,
  data: Uint8Array,
  chunks: number,
  modelName = 'model.onnx',
): { model: Uint8Array; chunks: Uint8Array[] } {
  const m = decodeModel(model);
  const ext = initializersOf(graphOf(m)).filter(isExternal);
  const field = (t: (typeof ext)[number], k: string) => t.externalData.find((e) => e.key === k);
  const offsets = ext.map((t) => Number(field(t, 'offset')?.value ?? 0)).sort((a, b) => a - b);
  // Cut points: the first tensor offset at or after each i/chunks of the file.
  const cuts = [0];
  for (let i = 1; i < chunks; i++) {
    const want = (data.byteLength * i) / chunks;
    const at = offsets.find((o) => o >= want && o > cuts[cuts.length - 1]!);
    if (at === undefined) throw new Error(`cannot split ${data.byteLength} bytes into ${chunks} chunks`);
    cuts.push(at);
  }
  cuts.push(data.byteLength);
  const names = Array.from({ length: chunks }, (_, i) => `${modelName}_data${i === 0 ? '' : `_${i}`}`);
  for (const t of ext) {
    const off = Number(field(t, 'offset')?.value ?? 0);
    let c = 0;
    while (off >= cuts[c + 1]!) c++;
    field(t, 'location')!.value = names[c]!;
    const o = field(t, 'offset');
    if (o) o.value = String(off - cuts[c]!);
    else t.externalData.push({ key: 'offset', value: String(off - cuts[c]!) } as never);
  }
  return {
    model: encodeModel(m),
    chunks: names.map((_, i) => data.slice(cuts[i]!, cuts[i + 1]!)),
  };
}

export interface ReplicaPackageOptions {
  /** Which replica becomes which dtype file, e.g. { fp32: 'builder/model.onnx' }. */
  files: Partial<Record<'fp32' | 'fp16' | 'q4' | 'q4f16', string>>;
  /** Split each file's external data into this many chunks (default 1 = as committed). */
  chunks?: number;
  /** Put the chunk count into config.json (default true); false = leave it to the graph's references. */
  declareChunks?: boolean;
}

const DTYPE_FILE = {
  fp32: 'model.onnx',
  fp16: 'model_fp16.onnx',
  q4: 'model_q4.onnx',
  q4f16: 'model_q4f16.onnx',
};

/** path → bytes of a whole package (paths as in the HF layout: config.json, onnx/model.onnx, …). */
export async function replicaPackage(
  read: Read,
  opts: ReplicaPackageOptions,
): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  const config = JSON.parse(new TextDecoder().decode(await read('config.json'))) as Record<string, unknown>;
  const chunks = opts.chunks ?? 1;
  const perFile: Record<string, number> = {};
  for (const [dtype, src] of Object.entries(opts.files)) {
    const name = DTYPE_FILE[dtype as keyof typeof DTYPE_FILE];
    const bytes = await read(src);
    const dir = src.slice(0, src.lastIndexOf('/') + 1);
    const graph = decodeModel(bytes);
    const ext = initializersOf(graphOf(graph)).filter(isExternal);
    if (ext.length === 0) {
      out.set(`onnx/${name}`, bytes);
      perFile[name] = 0;
      continue;
    }
    const loc = ext[0]!.externalData.find((e) => e.key === 'location')!.value!;
    const data = await read(dir + loc);
    const split = splitExternalData(bytes, data, chunks, name);
    out.set(`onnx/${name}`, split.model);
    split.chunks.forEach((c, i) => {
      out.set(`onnx/${name}_data${i === 0 ? '' : `_${i}`}`, c);
    });
    perFile[name] = chunks;
  }
  if (opts.declareChunks !== false) config['transformers.js_config'] = { use_external_data_format: perFile };
  out.set('config.json', json(config));
  out.set('generation_config.json', json({ eos_token_id: 0 }));
  const tok = replicaTokenizer();
  out.set('tokenizer.json', tok.tokenizer);
  out.set('tokenizer_config.json', tok.tokenizerConfig);
  return out;
}
