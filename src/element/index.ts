/**
 * Entry of the `<weblora-chat>` library build (vite.lib.config.ts → dist-lib/weblora-chat.js):
 * importing it defines the element. Also the import for apps built with this repo's Vite config.
 * Exports the class, the define helper and the registry knobs (where the runtime / default model live),
 * and `adoptEngine`, which lends a page's own worker engine to the elements that ask for its model.
 */
import { defineWebLoraChat } from './weblora-chat.ts';

export type {
  GenerateResult,
  LoadProgress,
  LoadReport,
  TokenDelta,
} from '../engine/types.ts';
export {
  type AdoptedModel,
  adoptEngine,
  configureWebLora,
  getWebLoraConfig,
  type ModelKey,
  modelKeyString,
  resolveModelUrl,
  type WebLoraConfig,
} from './registry.ts';
export {
  defineWebLoraChat,
  WebLoraChat,
  type WebLoraChatEventMap,
  type WebLoraErrorDetail,
} from './weblora-chat.ts';

defineWebLoraChat();
