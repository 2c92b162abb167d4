import type { TranscriptText } from './machine.js';

interface Line {
  type?: string;
  isSidechain?: boolean;
  timestamp?: string;
  message?: { id?: string; role?: string; content?: string | Array<{ type?: string; text?: string }> };
}

/**
 * What the agent said last: the text of its last assistant message in the newest transcript that
 * has one (Claude Code writes a line per content block, each with the message's id, so the blocks
 * of that message are joined). Subagents' messages (sidechains) are not the agent's answer.
 */
export function lastAgentMessage(texts: TranscriptText[]): { text: string; at?: string } | undefined {
  for (let i = texts.length - 1; i >= 0; i--) {
    const lines = texts[i]!.text.split('\n');
    let id: string | undefined;
    let found: { parts: string[]; at?: string } | undefined;
    for (let j = lines.length - 1; j >= 0; j--) {
      let entry: Line;
      try {
        entry = JSON.parse(lines[j]!) as Line;
      } catch {
        continue; // a line still being written, or not JSON
      }
      if (entry.type !== 'assistant' || entry.isSidechain || entry.message?.role !== 'assistant') continue;
      const content = entry.message.content;
      const text =
        typeof content === 'string'
          ? content
          : (content ?? [])
              .filter((b) => b.type === 'text' && b.text)
              .map((b) => b.text!)
              .join('\n');
      if (found) {
        // Earlier blocks of the same message come first; another message ends the search.
        if (entry.message.id !== undefined && entry.message.id === id) {
          if (text) found.parts.unshift(text);
          continue;
        }
        break;
      }
      if (!text) continue;
      id = entry.message.id;
      found = { parts: [text], at: entry.timestamp };
      if (id === undefined) break;
    }
    if (found) return { text: found.parts.join('\n').trim(), ...(found.at ? { at: found.at } : {}) };
  }
  return undefined;
}
