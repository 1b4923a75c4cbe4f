/**
 * Worker entry for `<weblora-chat>`: the stock engine worker. Its settings (ORT's wasm runtime folder,
 * threads, default model) arrive in the Worker's `name`, which src/config.ts reads inside the worker, so
 * nothing here depends on import order. A separate entry keeps the library build's worker chunk named
 * after the element.
 */
import '../engine/worker.ts';
