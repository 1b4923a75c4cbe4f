/**
 * "Recent runs" under the Generate panel: the last few generations, newest first, each with the
 * adapter or mix that produced it, the mode, the start of the prompt and of the output, and the
 * result line — so two tries with different adapters can be told apart after the output box moved on.
 * Kept in memory only (a reload starts empty); it deliberately stores no full texts.
 */
import { h } from '../ui/dom.ts';
import { byId } from './dom.ts';

export interface RunRecord {
  label: string;
  mode: string;
  prompt: string;
  output: string;
  result: string;
}

const KEEP = 5;

function excerpt(text: string, n: number): string {
  const one = text.replace(/\s+/g, ' ').trim();
  return one.length > n ? `${one.slice(0, n - 1)}…` : one;
}

export function mountRunHistory(): { add(r: RunRecord): void } {
  const wrap = byId<HTMLDetailsElement>('run-history');
  const list = byId('run-history-list');
  const count = byId('run-history-count');
  const runs: RunRecord[] = [];
  wrap.hidden = true;
  return {
    add(r) {
      runs.unshift(r);
      runs.length = Math.min(runs.length, KEEP);
      wrap.hidden = false;
      count.textContent = String(runs.length);
      list.replaceChildren(
        ...runs.map((x) =>
          h(
            'li',
            { 'data-label': x.label },
            h('strong', {}, x.label),
            ` · ${x.mode} · `,
            h('q', {}, excerpt(x.prompt, 40)),
            ' → ',
            h('q', { class: 'mono' }, excerpt(x.output, 60)),
            h('small', {}, x.result),
          ),
        ),
      );
    },
  };
}
