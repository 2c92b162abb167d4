import path from 'node:path';
import { ThopterError } from '../../errors.js';
import { AGENT_SETTINGS_FILE, agentSettings } from '../../status/turns.js';
import type { ThopterRecord } from '../../thopters/record.js';
import type { Phase } from './phase.js';
import { machineOf } from './wait-ready.js';

export const writeContext: Phase = {
  name: 'write-context',
  optional: false,
  attempts: 3,
  backoffMs: 1000,
  async run({ thopter, prompts, transport, machineLog }) {
    const { request } = thopter;
    const machine = machineOf(thopter);
    const t = await transport();
    let prompt: string;
    try {
      prompt = await prompts.render(request.prompt, {
        repository: request.repository,
        repoName: request.repoName,
        issueNumber: request.issue.number === undefined ? '' : String(request.issue.number),
        workBranch: machine.workBranch,
        machineId: machine.id,
        ...(request.continues
          ? {
              continuedThopter: request.continues.thopterId,
              continueText: request.continues.text
                ? quote(request.continues.text)
                : '(nothing more was said: the new comments in `./issue.md` say what is wanted)',
            }
          : {}),
      });
    } catch (err) {
      throw new ThopterError('phase', `prompt "${request.prompt}" cannot be read: ${String(err)}`, false);
    }
    // Issue text goes into files, never into a command line: no shell ever parses it.
    await t.writeFile(path.join(t.paths.workspace, 'issue.md'), issueMarkdown(thopter));
    await t.writeFile(
      path.join(t.paths.workspace, 'issue.json'),
      JSON.stringify(issueJson(thopter), null, 2) + '\n',
    );
    await t.writeFile(path.join(t.paths.workspace, 'prompt.md'), prompt);
    // Beside the golden claude's settings, never in place of them: launch-agent passes this file
    // with --settings, and its Stop hook marks each end of the agent's turn.
    await t.writeFile(path.join(t.paths.home, AGENT_SETTINGS_FILE), agentSettings());
    await machineLog(`wrote issue.md, issue.json, prompt.md and ~/${AGENT_SETTINGS_FILE}`);
    return { summary: `wrote issue.md, issue.json and prompt.md (prompt "${request.prompt}")` };
  },
};

/** Seed phase 4, step 15: the human-readable context. */
export function issueMarkdown({ request }: ThopterRecord): string {
  const { issue } = request;
  const lines = [
    '# GitHub Issue',
    `**Repository:** ${request.repository}`,
    `**Id:** ${issue.number ?? '(none)'}`,
    `**Title:** ${issue.title}`,
    `**URL:** ${issue.url ?? '(none)'}`,
    `**Author:** ${issue.author ?? '(unknown)'}`,
    '',
    '## Issue Description',
    issue.body || '(no description)',
    '',
    '## Conversation Thread',
  ];
  if (issue.comments.length === 0) lines.push('(no comments)');
  // For a continuing thopter, what came after the continued one started is what its agent has
  // not seen: those comments go under their own heading.
  const since = request.continues ? Date.parse(request.continues.since) : Infinity;
  let marked = false;
  for (const c of issue.comments) {
    if (!marked && Date.parse(c.createdAt) > since) {
      marked = true;
      lines.push(
        '',
        `## New since the last run (${request.continues!.thopterId} started ${request.continues!.since})`,
      );
    }
    lines.push('', `### ${c.author} — ${c.createdAt}`, '', c.body);
  }
  if (request.continues?.text) {
    lines.push('', '## What is asked now', '', request.continues.text);
  }
  return lines.join('\n') + '\n';
}

/** Markdown's quote of a text of several lines. */
function quote(text: string): string {
  return text
    .split('\n')
    .map((l) => `> ${l}`.trimEnd())
    .join('\n');
}

/** Seed phase 4, step 15: the structured context the observer reads. */
export function issueJson({ id, request, machine }: ThopterRecord) {
  return {
    source: request.source === 'github' ? 'github' : 'api',
    thopterId: id,
    machineId: machine?.id,
    repository: request.repository,
    workBranch: machine?.workBranch,
    github: {
      issueNumber: request.issue.number === undefined ? '' : String(request.issue.number),
      issueTitle: request.issue.title,
      issueBody: request.issue.body,
      issueUrl: request.issue.url ?? '',
      issueAuthor: request.issue.author ?? '',
      mentionAuthor: request.issue.mentionAuthor ?? '',
      comments: request.issue.comments,
    },
    ...(request.continues ? { continues: request.continues } : {}),
  };
}
