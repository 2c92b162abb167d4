import { randomBytes } from 'node:crypto';
import { ThopterError } from '../../errors.js';
import { hashToken } from '../../thopters/store.js';
import { gitIdentity, workBranch, type Phase } from './phase.js';

const newMachineId = () => randomBytes(4).toString('hex');

export const createMachine: Phase = {
  name: 'create-machine',
  optional: false,
  attempts: 3,
  backoffMs: 2000,
  async run({ thopter, provider, store, config, signal, firstRun }) {
    const id = newMachineId();
    // Recorded before the provider is asked, and only if no machine is recorded yet: a job resumed
    // after a crash, or running twice, finds that id and makes (or finds) the same machine.
    const machine = await store.claimMachine(thopter.id, {
      id,
      provider: provider.name,
      // A continuing thopter carries on the ended one's branch, so its pull request goes on too.
      workBranch: thopter.request.continues?.workBranch ?? workBranch(thopter.request.issue.number, id),
      state: 'creating',
      createdAt: new Date().toISOString(),
    });
    if (!machine)
      throw new ThopterError('destroy-requested', 'the thopter ended before its machine was created');
    // A fresh token on every attempt (only hashes are stored, so a resumed attempt cannot know the
    // previous one). create() delivers it to a new machine; a machine an earlier attempt made
    // keeps that attempt's token, whose hash is still accepted.
    const statusToken = randomBytes(32).toString('base64url');
    await store.addTokenHash(thopter.id, hashToken(statusToken));
    const { request } = thopter;
    const settings = config.repositories[request.repository];
    const made = await provider.create(
      {
        id: machine.id,
        thopterId: thopter.id,
        statusToken,
        requestId: request.id,
        resume: !firstRun,
        repository: request.repository,
        issueNumber: request.issue.number,
        git: gitIdentity(settings),
        envFile: config.envFile,
        postCheckoutScript: config.postCheckoutScript,
      },
      signal,
    );
    const created = { ...machine, state: 'created' as const, providerId: made.providerId, name: made.name };
    if (!(await store.setMachine(thopter.id, created))) {
      // The thopter ended while its machine was being made: nobody else will remove it.
      await provider.destroy(machine.id);
      throw new ThopterError('destroy-requested', 'the thopter ended while its machine was being created');
    }
    const called = made.providerId ? ` = ${provider.name} machine ${made.providerId} "${made.name}"` : '';
    return {
      summary: `machine ${machine.id}${called} (${provider.name}), work branch ${machine.workBranch}`,
    };
  },
};
