import path from 'node:path';
import { messageOf } from '../errors.js';
import type { Transport } from '../providers/types.js';
import { describeSave, type SaveOutcome, type ThopterRecord } from '../thopters/record.js';
import type { ProcessorDeps } from './deps.js';
import { gitIdentity } from './phases/phase.js';

type SaveDeps = Pick<ProcessorDeps, 'store' | 'transports' | 'config' | 'log'>;
type Work = Omit<SaveOutcome, 'at'>;

/**
 * The save before a teardown: in the thopter's clone, commits what the agent left uncommitted on
 * its work branch (untracked files too; `.gitignore` holds) and pushes the work branch when origin
 * lacks some of its commits. Never forced, never another branch. It runs over the transport, so it
 * is the same on every provider, and it is bounded by THOPTER_SAVE_TIMEOUT: a machine that hangs
 * must not keep its MAX_THOPTERS slot. What it did (or why not) becomes an event and `record.saved`.
 *
 * Idempotent: run again after a crash, it finds nothing to commit and nothing to push.
 */
export async function save(deps: SaveDeps, record: ThopterRecord, reason: string): Promise<SaveOutcome> {
  const { store, config } = deps;
  const machine = record.machine!;
  const abort = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  // What it did so far: a save that times out or fails while pushing still names its commit.
  const done: Work = { files: [], pushed: false };
  const timedOut = new Promise<Work>((resolve) => {
    timer = setTimeout(() => {
      abort.abort('the save timed out');
      resolve({
        ...done,
        error: `timed out after ${Math.round(config.saveTimeoutMs / 1000)} s (THOPTER_SAVE_TIMEOUT)`,
      });
    }, config.saveTimeoutMs);
  });
  const settings = config.repositories[record.request.repository];
  const work = (async (): Promise<Work> => {
    const t = await deps.transports.get(machine.id);
    const repoDir = path.join(t.paths.workspace, record.request.repoName);
    return saveWork(t, repoDir, machine.workBranch, gitIdentity(settings), reason, abort.signal, done);
  })().catch((err: unknown): Work => ({ ...done, error: messageOf(err) }));
  const outcome: SaveOutcome = {
    at: new Date().toISOString(),
    ...(await Promise.race([work, timedOut]).finally(() => clearTimeout(timer))),
  };
  await store.setSaved(record.id, outcome);
  await store.addEvent(
    record.id,
    outcome.error ? 'save-failed' : 'saved',
    describeSave(outcome, machine.workBranch),
  );
  deps.log.info({ thopter: record.id, saved: outcome }, 'save before teardown');
  return outcome;
}

/** Records why there was no save: the kill asked to discard the work, or there is no machine. */
export async function skipSave(deps: Pick<ProcessorDeps, 'store'>, id: string, why: string): Promise<void> {
  await deps.store.setSaved(id, { at: new Date().toISOString(), files: [], pushed: false, error: why });
  await deps.store.addEvent(id, 'save-skipped', `not saved: ${why}`);
}

async function saveWork(
  t: Transport,
  repoDir: string,
  workBranch: string,
  identity: { userName: string; userEmail: string },
  reason: string,
  signal: AbortSignal,
  done: Work,
): Promise<Work> {
  const git = (args: string[]) =>
    t.exec(['git', '-C', repoDir, ...args], { signal, env: { GIT_TERMINAL_PROMPT: '0' } });
  const must = async (args: string[]) => {
    const r = await git(args);
    if (r.exitCode !== 0)
      throw new Error(`git ${args.find((a) => !a.startsWith('-'))} failed: ${tail(r.stderr)}`);
    return r.stdout;
  };
  if (!(await t.exists(path.join(repoDir, '.git'))))
    return { files: [], pushed: false, error: 'there is no clone' };
  const head = await git(['symbolic-ref', '-q', '--short', 'HEAD']);
  const branch = head.exitCode === 0 ? head.stdout.trim() : undefined;
  if (branch !== workBranch) {
    const where = branch ? `branch ${branch}` : 'a detached HEAD';
    return {
      files: [],
      pushed: false,
      error: `the clone is on ${where}, not the work branch ${workBranch}: nothing saved on it`,
    };
  }

  let commit: string | undefined;
  let files: string[] = [];
  if ((await must(['status', '--porcelain', '-z', '--untracked-files=all'])) !== '') {
    await must(['add', '-A']);
    files = (await must(['diff', '--cached', '--name-only', '-z'])).split('\0').filter(Boolean);
    done.files = files;
    if (files.length > 0) {
      const subject = `thopter: save work (${oneLine(reason)})`;
      // The repository's identity, as clone-repo set it up; the agent's hooks do not get a veto
      // over keeping its work.
      await must([
        '-c',
        `user.name=${identity.userName}`,
        '-c',
        `user.email=${identity.userEmail}`,
        'commit',
        '-q',
        '--no-verify',
        '-m',
        subject,
      ]);
      commit = (await must(['rev-parse', 'HEAD'])).trim();
      done.commit = commit;
    }
  }
  // Commits that no branch of origin has (as this clone last saw it): without any, a push would
  // at most publish a branch that adds nothing.
  const ahead = Number((await must(['rev-list', '--count', 'HEAD', '--not', '--remotes=origin'])).trim());
  if (ahead === 0) return { commit, files, pushed: false };
  const ref = `refs/heads/${workBranch}`;
  const push = await git(['push', '--porcelain', '--no-verify', 'origin', `${ref}:${ref}`]);
  if (push.exitCode !== 0) {
    const refused = push.stdout
      .split('\n')
      .filter((l) => l.startsWith('!'))
      .map((l) => l.split('\t').slice(1).join(' '));
    return {
      commit,
      files,
      pushed: false,
      error: `push rejected: ${tail([...refused, push.stderr].join('\n'))}`,
    };
  }
  return { commit, files, pushed: true };
}

const oneLine = (text: string) => {
  const line = text.split('\n')[0]!.trim();
  return line.length > 120 ? `${line.slice(0, 119)}…` : line;
};
const tail = (text: string) =>
  text
    .trim()
    .replace(/\s*\n\s*/g, ' | ')
    .slice(-600);
