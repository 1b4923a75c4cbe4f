/**
 * User-picked model files (a folder through `<input webkitdirectory>`, a multi-file pick or dropped
 * files) as the same path → bytes map model-files.ts gives for a URL, with the same size/sha256 checks.
 */
import { FetchError, ModelPackageError } from '../errors.ts';
import { verify } from './download.ts';
import type { ModelFileSpec } from './model-files.ts';

/** Path of a picked file inside the picked folder: webkitRelativePath ('folder/onnx/x.onnx') or name. */
function relativePath(f: File): string {
  return f.webkitRelativePath || f.name;
}

/** Picked files by their path inside the picked folder (as localFilesSource keys them), none read. */
export function pickedPaths(files: readonly File[] | FileList): Map<string, File> {
  const list = Array.from(files);
  const paths = list.map(relativePath);
  const first = paths[0]?.split('/')[0];
  const sharedTop = first !== undefined && paths.every((p) => p.includes('/') && p.split('/')[0] === first);
  return new Map(list.map((f, i) => [sharedTop ? paths[i]!.slice(first!.length + 1) : paths[i]!, f]));
}

/**
 * User-picked files (`<input type=file webkitdirectory>` or a multi-file pick) → path → bytes, keyed
 * like fetchModelFiles. The picked folder's own name (the common first segment of every
 * webkitRelativePath) is stripped, so 'weblora-shakespeare/onnx/model_q4.onnx' becomes
 * 'onnx/model_q4.onnx'. With `specs`, returns only those files (a spec path may also match a unique
 * '/'-suffix, e.g. when a parent folder was picked) and checks size/sha256; a missing required file or
 * a failed check → ModelPackageError.
 */
export async function localFilesSource(
  files: readonly File[] | FileList,
  specs?: readonly ModelFileSpec[],
): Promise<Map<string, Uint8Array>> {
  const byPath = pickedPaths(files);

  const out = new Map<string, Uint8Array>();
  if (!specs) {
    for (const [path, f] of byPath) out.set(path, new Uint8Array(await f.arrayBuffer()));
    return out;
  }
  const missing: string[] = [];
  for (const spec of specs) {
    let f = byPath.get(spec.path);
    if (!f) {
      const hits = [...byPath.keys()].filter((p) => p.endsWith(`/${spec.path}`));
      if (hits.length === 1) f = byPath.get(hits[0]!);
    }
    if (!f) {
      if (!spec.optional) missing.push(spec.path);
      continue;
    }
    const bytes = new Uint8Array(await f.arrayBuffer());
    try {
      await verify(spec, `file:${relativePath(f)}`, bytes, null);
    } catch (e) {
      if (e instanceof FetchError) throw new ModelPackageError(e.message, e.data);
      throw e;
    }
    out.set(spec.path, bytes);
  }
  if (missing.length > 0) {
    throw new ModelPackageError(`the picked files lack ${missing.join(', ')}`, {
      missing,
      picked: [...byPath.keys()],
    });
  }
  return out;
}
