/**
 * Diagnostic timing of one WebGPU training pass (forward + loss + backward), per kernel entry point:
 * the numbers of src/train/README.md (tests/browser/train-gpu-timing.test.ts prints them). With the
 * device feature 'timestamp-query', every dispatch runs in its own compute pass with timestamp writes
 * (GPU time, no submit overhead); without it, every command is submitted alone and awaited
 * (`onSubmittedWorkDone`), which adds a fixed per-command cost. Adds the batch's gradient like
 * `accumulate`. Not for training: it serializes everything.
 */
import type { Batch } from './cpu-model.ts';
import type { Cmd } from './gpu-kernels.ts';
import type { GpuTrainBackend } from './gpu-model.ts';

export interface KernelTimes {
  method: 'timestamp-query' | 'submit-and-wait';
  /** Per label (shader:entry, or `clear <buffer>`): total ms and number of commands. */
  kernels: Map<string, { ms: number; count: number }>;
}

export async function profilePass(backend: GpuTrainBackend, batch: Batch): Promise<KernelTimes> {
  const k = backend.kernels;
  const device = k.device;
  const cmds = backend.commandsFor(batch);
  const kernels = new Map<string, { ms: number; count: number }>();
  const add = (label: string, ms: number) => {
    const e = kernels.get(label) ?? { ms: 0, count: 0 };
    e.ms += ms;
    e.count++;
    kernels.set(label, e);
  };
  await device.queue.onSubmittedWorkDone();
  if (!device.features.has('timestamp-query')) {
    for (const c of cmds) {
      const t0 = performance.now();
      const enc = device.createCommandEncoder();
      k.encode(enc, [c]);
      device.queue.submit([enc.finish()]);
      await device.queue.onSubmittedWorkDone();
      add(c.label, performance.now() - t0);
    }
    return { method: 'submit-and-wait', kernels };
  }
  const dispatches = cmds.filter((c): c is Extract<Cmd, { kind: 'dispatch' }> => c.kind === 'dispatch');
  const n = dispatches.length;
  const qs = device.createQuerySet({ type: 'timestamp', count: 2 * n });
  const resolve = device.createBuffer({
    size: 16 * n,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  const read = device.createBuffer({
    size: 16 * n,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const enc = device.createCommandEncoder();
  let i = 0;
  for (const c of cmds) {
    if (c.kind === 'clear') {
      enc.clearBuffer(c.buffer, c.offset, c.size);
      continue;
    }
    const pass = enc.beginComputePass({
      timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
    });
    pass.setPipeline(c.pipeline);
    pass.setBindGroup(0, c.group);
    pass.dispatchWorkgroups(c.x);
    pass.end();
    i++;
  }
  enc.resolveQuerySet(qs, 0, 2 * n, resolve, 0);
  enc.copyBufferToBuffer(resolve, 0, read, 0, 16 * n);
  device.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const ts = new BigUint64Array(read.getMappedRange().slice(0));
  read.unmap();
  dispatches.forEach((c, j) => {
    add(c.label, Number(ts[2 * j + 1]! - ts[2 * j]!) / 1e6);
  });
  for (const b of [resolve, read]) b.destroy();
  qs.destroy();
  return { method: 'timestamp-query', kernels };
}
