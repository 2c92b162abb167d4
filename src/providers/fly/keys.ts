import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Redis } from 'ioredis';
import ssh2 from 'ssh2';

export interface HubKey {
  privateKey: string;
  /** OpenSSH one-line form, for authorized_keys. */
  publicKey: string;
}

/**
 * The hub's SSH key pair, made on first start and kept under DATA_DIR/ssh (the private key mode
 * 600). Only its public half ever leaves the hub: in each machine's creation request.
 */
export function loadOrCreateHubKey(dataDir: string): HubKey {
  const dir = path.join(dataDir, 'ssh');
  const privateFile = path.join(dir, 'hub_ed25519');
  const publicFile = `${privateFile}.pub`;
  if (!existsSync(privateFile) || !existsSync(publicFile)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'thopter-hub' });
    writeFileSync(privateFile, pair.private, { mode: 0o600 });
    writeFileSync(publicFile, pair.public.trim() + '\n', { mode: 0o644 });
  }
  return {
    privateKey: readFileSync(privateFile, 'utf8'),
    publicKey: readFileSync(publicFile, 'utf8').trim(),
  };
}

/** `SHA256:…` of an OpenSSH public key line, as OpenSSH prints it and ssh.ts computes it. */
export function fingerprint(publicKeyLine: string): string {
  const blob = Buffer.from(publicKeyLine.trim().split(/\s+/)[1] ?? '', 'base64');
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

/**
 * A host key for a new machine, made by the hub and delivered with the machine (its files survive
 * restarts, where a key made at boot would not), so the hub knows what to expect before it first
 * connects.
 */
export function newHostKey(): { privateKey: string; fingerprint: string } {
  const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'thopter-machine' });
  return { privateKey: pair.private, fingerprint: fingerprint(pair.public) };
}

/**
 * What several hubs sharing one Redis need to agree on: every hub's public key (a new machine lets
 * them all in, since any hub may run its next phase) and each machine's SSH host key, pinned the
 * first time any hub reaches it.
 */
export class SshTrust {
  private readonly hubKeys: string;
  private readonly hostKeys: string;

  constructor(
    private readonly redis: Redis,
    prefix: string,
  ) {
    this.hubKeys = `${prefix}:fly:hub-keys`;
    this.hostKeys = `${prefix}:fly:host-keys`;
  }

  async register(publicKey: string): Promise<void> {
    await this.redis.sadd(this.hubKeys, publicKey);
  }

  /** The authorized_keys file a new machine gets. */
  async authorizedKeys(): Promise<string> {
    return (await this.redis.smembers(this.hubKeys)).sort().join('\n') + '\n';
  }

  /** Pins the host key the hub made for a machine, before the machine exists. */
  async pin(machine: string, fingerprint: string): Promise<void> {
    await this.redis.hset(this.hostKeys, machine, fingerprint);
  }

  /**
   * True when `fingerprint` is the one pinned for the machine. A machine the hub gave no key (a
   * golden claude made before this hub) is trusted on first use, by whichever hub reaches it first.
   */
  async verify(machine: string, fingerprint: string): Promise<boolean> {
    await this.redis.hsetnx(this.hostKeys, machine, fingerprint);
    return (await this.redis.hget(this.hostKeys, machine)) === fingerprint;
  }

  async forget(machine: string): Promise<void> {
    await this.redis.hdel(this.hostKeys, machine);
  }
}
