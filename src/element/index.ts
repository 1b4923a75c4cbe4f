/**
 * Entry of the `<weblora-chat>` library build (vite.lib.config.ts → dist-lib/weblora-chat.js):
 * importing it defines the element. Also the import for apps built with this repo's Vite config.
 * Exports the class, the define helper and the registry knobs (where the runtime / default model live).
 */
import { defineWebLoraChat } from './weblora-chat.ts';

export type {
  GenerateResult,
  LoadProgress,
  LoadReport,
  TokenDelta,
} from '../engine/types.ts';
export { configureWebLora, getWebLoraConfig, type WebLoraConfig } from './registry.ts';
export {
  defineWebLoraChat,
  WebLoraChat,
  type WebLoraChatEventMap,
  type WebLoraErrorDetail,
} from './weblora-chat.ts';

defineWebLoraChat();
