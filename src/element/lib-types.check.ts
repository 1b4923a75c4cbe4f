/**
 * Compile-time only (no runtime code): `tsc --noEmit` (npm run lint) fails when the hand-written
 * declarations shipped with the library (weblora-chat.lib.d.ts) drift from the implementation.
 */
import type * as Impl from './index.ts';
import type * as Lib from './weblora-chat.lib.d.ts';

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
/** Values the library hands out: the implementation's may carry more fields than the declaration. */
type Gives<Impl, Lib> = [Impl] extends [Lib] ? true : false;

export type LibTypesMatch = [
  Assert<Same<Lib.LoadProgress, Impl.LoadProgress>>,
  Assert<Same<Lib.GenerateResult, Impl.GenerateResult>>,
  Assert<Same<Lib.TokenDelta, Impl.TokenDelta>>,
  Assert<Same<Lib.WebLoraErrorDetail, Impl.WebLoraErrorDetail>>,
  Assert<Same<Lib.WebLoraConfig, Impl.WebLoraConfig>>,
  Assert<Same<Lib.LoadReport['config'], Impl.LoadReport['config']>>,
  Assert<Gives<Impl.LoadReport, Lib.LoadReport>>,
  Assert<Same<keyof Lib.WebLoraChatEventMap, keyof Impl.WebLoraChatEventMap>>,
  Assert<Same<Parameters<typeof Lib.configureWebLora>, Parameters<typeof Impl.configureWebLora>>>,
  Assert<Same<Parameters<typeof Lib.defineWebLoraChat>, Parameters<typeof Impl.defineWebLoraChat>>>,
];

// Every public member of the implementation exists in the declaration with a compatible type.
type PublicMembers =
  | 'model'
  | 'modelFiles'
  | 'adapter'
  | 'mode'
  | 'history'
  | 'clear'
  | 'system'
  | 'maxTokens'
  | 'temperature'
  | 'report'
  | 'busy'
  | 'generate'
  | 'stop';
export type LibClassMatches = Assert<
  Gives<Pick<Impl.WebLoraChat, PublicMembers>, Pick<Lib.WebLoraChat, PublicMembers>>
>;
