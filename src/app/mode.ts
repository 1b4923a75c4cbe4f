/**
 * The demo's Chat / Completion switch. Completion sends the prompt as raw text and shows prompt +
 * continuation; chat sends the conversation (system prompt + earlier turns + the new message) through
 * the model's chat template, keeps the turns until "New chat", and the Generate panel shows each reply
 * on its own line. Default: `?mode=` when given, else chat when the loaded model has a chat template
 * (LoadReport.config.hasChatTemplate), else completion (chat is then unavailable). A choice goes into
 * the URL like the backend's. It renders only the switch and the system prompt row; generate.ts
 * draws the conversation.
 */
import type { ChatMessage, GenerateRequest } from '../engine/types.ts';
import { byId } from './dom.ts';
import type { AppState } from './state.ts';

export type DemoMode = 'chat' | 'completion';

const COMPLETION_PROMPT = 'ROMEO:\nBut soft,';
const CHAT_PROMPT = 'Good morrow! What news from Verona?';
const HINT: Record<DemoMode, string> = {
  completion: 'Ctrl+Enter generates, Escape stops. Completion: the output continues the prompt as raw text.',
  chat: 'Ctrl+Enter sends, Escape stops. Chat: the model answers through its chat template and remembers the conversation until New chat.',
};

export interface ModeControl {
  mode(): DemoMode;
  /** The request body for `text`: raw prompt, or the conversation so far plus `text` as the next message. */
  request(text: string, opts?: { history?: boolean }): Pick<GenerateRequest, 'prompt' | 'messages'>;
  /** The turns so far (chat). */
  history(): readonly ChatMessage[];
  /** Records a finished chat turn. */
  commit(user: string, reply: string): void;
  /** Called when the conversation was reset (mode change, New chat). */
  onReset(cb: () => void): void;
}

function modeFromUrl(): DemoMode | null {
  const m = new URLSearchParams(location.search).get('mode');
  return m === 'chat' || m === 'completion' ? m : null;
}

export function mountMode(state: AppState): ModeControl {
  const chat = byId<HTMLInputElement>('mode-chat');
  const completion = byId<HTMLInputElement>('mode-completion');
  const systemRow = byId('system-row');
  const system = byId<HTMLTextAreaElement>('system');
  const reset = byId<HTMLButtonElement>('chat-reset');
  const prompt = byId<HTMLTextAreaElement>('prompt');
  const hint = byId('prompt-hint');
  const label = byId('prompt-label');
  let chosen: DemoMode | null = modeFromUrl();
  let current: DemoMode = chosen ?? 'completion';
  let turns: ChatMessage[] = [];
  const resetListeners = new Set<() => void>();

  const clear = (): void => {
    turns = [];
    for (const cb of resetListeners) cb();
  };

  function apply(mode: DemoMode): void {
    const changed = mode !== current;
    current = mode;
    chat.checked = mode === 'chat';
    completion.checked = mode === 'completion';
    systemRow.hidden = mode !== 'chat';
    reset.hidden = mode !== 'chat';
    hint.textContent = HINT[mode];
    label.textContent = mode === 'chat' ? 'Message' : 'Prompt';
    // Swap the example text when the user has not written their own.
    if (mode === 'chat' && prompt.value === COMPLETION_PROMPT) prompt.value = CHAT_PROMPT;
    if (mode === 'completion' && prompt.value === CHAT_PROMPT) prompt.value = COMPLETION_PROMPT;
    document.body.dataset.mode = mode;
    if (changed) clear();
  }

  state.onModel(() => {
    const r = state.report;
    if (!r) return;
    const hasTemplate = r.config.hasChatTemplate;
    chat.disabled = !hasTemplate;
    chat.parentElement!.title = hasTemplate ? '' : 'This model has no chat template: completion only.';
    apply(hasTemplate ? (chosen ?? 'chat') : 'completion');
  });

  for (const input of [chat, completion]) {
    input.addEventListener('change', () => {
      if (!input.checked) return;
      chosen = input.value as DemoMode;
      const url = new URL(location.href);
      url.searchParams.set('mode', chosen);
      history.replaceState(null, '', url);
      apply(chosen);
    });
  }
  reset.addEventListener('click', () => {
    clear();
    prompt.focus();
  });
  apply(current);

  return {
    mode: () => current,
    request(text, opts = {}) {
      if (current === 'completion') return { prompt: text };
      const sys = system.value.trim();
      return {
        messages: [
          ...(sys ? [{ role: 'system', content: sys }] : []),
          ...(opts.history === false ? [] : turns),
          { role: 'user', content: text },
        ],
      };
    },
    history: () => turns,
    commit(user, reply) {
      if (current === 'chat' && reply !== '')
        turns.push({ role: 'user', content: user }, { role: 'assistant', content: reply });
    },
    onReset(cb) {
      resetListeners.add(cb);
    },
  };
}
