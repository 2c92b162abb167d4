import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

const PROMPT_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

/** The variables a prompt template may use, as in the seed. */
export interface PromptVariables {
  repository: string;
  repoName: string;
  issueNumber: string;
  workBranch: string;
  machineId: string;
  /** For `/thopter continue`: the ended thopter carried on, and what the command asked (quoted). */
  continuedThopter?: string;
  continueText?: string;
}

/**
 * Prompt templates: the `.md` files in PROMPTS_DIR. A name is looked up in the folder's listing,
 * never joined onto a path, so `../x` or `/etc/passwd` can only ever be "not a prompt".
 */
export class Prompts {
  constructor(readonly dir: string) {}

  async names(): Promise<string[]> {
    const entries = await readdir(this.dir, { withFileTypes: true });
    return entries
      .filter((e) => e.isFile() && e.name.endsWith('.md'))
      .map((e) => e.name.slice(0, -'.md'.length))
      .filter((n) => PROMPT_NAME.test(n))
      .sort();
  }

  /** The canonical name for `name` (which may end in .md), or null when there is no such prompt. */
  async resolve(name: string): Promise<string | null> {
    const bare = name.endsWith('.md') ? name.slice(0, -'.md'.length) : name;
    if (!PROMPT_NAME.test(bare)) return null;
    return (await this.names()).includes(bare) ? bare : null;
  }

  async render(name: string, vars: PromptVariables): Promise<string> {
    const canonical = await this.resolve(name);
    if (!canonical) throw new Error(`prompt "${name}" is not in ${this.dir}`);
    const template = await readFile(path.join(this.dir, `${canonical}.md`), 'utf8');
    return renderTemplate(template, vars);
  }
}

/** Replaces `{{name}}` for the known variables; anything else in braces is left as written. */
export function renderTemplate(template: string, vars: PromptVariables): string {
  return template.replace(/\{\{\s*(\w+)\s*\}\}/g, (whole, key: string) =>
    Object.hasOwn(vars, key) ? (vars[key as keyof PromptVariables] ?? whole) : whole,
  );
}
