import { createHash } from 'node:crypto';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { Client, type ClientChannel, type SFTPWrapper } from 'ssh2';
import { ThopterError } from '../../errors.js';
import { shellQuote } from '../shell.js';
import type { ExecOptions, ExecResult, Interactive, MachinePaths, Transport } from '../types.js';

const MAX_COLLECTED = 4 * 1024 * 1024;
const CONNECT_TIMEOUT_MS = 15_000;

export interface SshTarget {
  host: string;
  port: number;
  username: string;
  privateKey: string;
  /** Host keys pinned on first use: true when `fingerprint` is the one this machine showed first. */
  verifyHostKey(fingerprint: string): Promise<boolean>;
  paths: MachinePaths;
  /** Named in errors: "machine 3f2a…". */
  label: string;
}

/**
 * Opens one SSH connection to a machine. Everything a provision does on it (commands, file
 * transfers, the golden-claude stream) travels as channels of this one connection.
 */
export function connectSsh(target: SshTarget, signal?: AbortSignal): Promise<SshTransport> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    let hostKeyRejected = false;
    const fail = (err: Error) => {
      signal?.removeEventListener('abort', onAbort);
      client.end();
      reject(
        hostKeyRejected
          ? new ThopterError(
              'transport',
              `${target.label} (${target.host}:${target.port}) showed a different SSH host key than the one pinned when it was first reached: refusing to connect`,
              false,
            )
          : new ThopterError(
              'transport',
              `could not open SSH to ${target.label} (${target.host}:${target.port}): ${err.message}`,
              true,
              { cause: err },
            ),
      );
    };
    const onAbort = () => fail(new Error(`cancelled (${String(signal?.reason)})`));
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    client.once('ready', () => {
      signal?.removeEventListener('abort', onAbort);
      client.removeListener('error', fail);
      // A connection that breaks later makes the next call fail; the pool then opens a new one.
      client.on('error', () => {});
      resolve(new SshTransport(client, target));
    });
    client.once('error', fail);
    client.connect({
      host: target.host,
      port: target.port,
      username: target.username,
      privateKey: target.privateKey,
      readyTimeout: CONNECT_TIMEOUT_MS,
      keepaliveInterval: 15_000,
      keepaliveCountMax: 4,
      hostVerifier: (key: Buffer, verify: (ok: boolean) => void) => {
        const fingerprint = 'SHA256:' + createHash('sha256').update(key).digest('base64').replace(/=+$/, '');
        // (the same form as keys.ts's fingerprint() of a public key line)
        target.verifyHostKey(fingerprint).then(
          (ok) => {
            hostKeyRejected = !ok;
            verify(ok);
          },
          () => verify(false),
        );
      },
    });
  });
}

/** A Transport over SSH exec and SFTP, both on one connection. */
export class SshTransport implements Transport {
  readonly paths: MachinePaths;
  private sftpChannel?: Promise<SFTPWrapper>;
  private closed = false;

  constructor(
    private readonly client: Client,
    private readonly target: SshTarget,
  ) {
    this.paths = target.paths;
    client.once('close', () => (this.closed = true));
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  exec(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    if (argv.length === 0) return Promise.reject(new Error('exec needs a command'));
    // sshd hands the command to the login shell, so every word is quoted: no argument is ever
    // parsed by a shell. opts.env never holds a secret (see ExecOptions).
    const env = Object.entries(opts.env ?? {}).map(([k, v]) => shellQuote(`${k}=${v}`));
    // Closing a channel does not end a command that has no terminal: a timed-out one is ended on
    // the machine by coreutils' timeout, a little after the hub gave up on it.
    const limit = opts.timeoutMs ? `timeout -k 5 ${Math.ceil(opts.timeoutMs / 1000) + 5} ` : '';
    const command =
      `cd ${shellQuote(opts.cwd ?? this.paths.home)} && exec ${limit}` +
      (env.length ? `env ${env.join(' ')} ` : '') +
      argv.map(shellQuote).join(' ');
    return new Promise((resolve, reject) => {
      this.client.exec(command, (err, channel) => {
        if (err) return reject(this.broken(err, argv[0]!));
        this.runChannel(channel, argv[0]!, opts).then(resolve, reject);
      });
    });
  }

  open(argv: string[]): Promise<Interactive> {
    if (argv.length === 0) return Promise.reject(new Error('open needs a command'));
    const command = `cd ${shellQuote(this.paths.home)} && exec ${argv.map(shellQuote).join(' ')}`;
    return new Promise((resolve, reject) => {
      this.client.exec(command, (err, channel) => {
        if (err) return reject(this.broken(err, argv[0]!));
        channel.on('error', () => {});
        channel.stderr.resume();
        const done = new Promise<number | null>((settle) => {
          let code: number | null = null;
          channel.on('exit', (c: number | null) => (code = c));
          channel.once('close', () => settle(code));
        });
        resolve({
          stdin: channel,
          stdout: channel,
          done,
          close: () => {
            try {
              channel.signal('TERM');
            } catch {
              // the channel may be gone already
            }
            channel.end();
            channel.close();
          },
        });
      });
    });
  }

  private runChannel(channel: ClientChannel, name: string, opts: ExecOptions): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      let stdout = '';
      let stderr = '';
      let exitCode: number | undefined;
      let failure: Error | undefined;
      const stop = (err: Error) => {
        failure ??= err;
        try {
          channel.signal('KILL');
        } catch {
          // the channel may be gone already
        }
        channel.close();
      };
      const timer = opts.timeoutMs
        ? setTimeout(
            () => stop(new Error(`${name} did not finish within ${opts.timeoutMs} ms`)),
            opts.timeoutMs,
          )
        : undefined;
      const onAbort = () => stop(new Error(`${name} was cancelled (${String(opts.signal?.reason)})`));
      if (opts.signal?.aborted) onAbort();
      opts.signal?.addEventListener('abort', onAbort, { once: true });

      if (opts.stdout) channel.pipe(opts.stdout);
      else channel.on('data', (d: Buffer) => stdout.length < MAX_COLLECTED && (stdout += d.toString('utf8')));
      channel.stderr.on(
        'data',
        (d: Buffer) => stderr.length < MAX_COLLECTED && (stderr += d.toString('utf8')),
      );
      channel.on('error', () => {});
      if (opts.input === undefined) channel.end();
      else if (typeof opts.input === 'string' || Buffer.isBuffer(opts.input)) channel.end(opts.input);
      else (opts.input as Readable).pipe(channel);

      channel.on('exit', (code: number | null, signalName?: string) => {
        exitCode = code ?? (signalName ? 128 : 1);
      });
      channel.once('close', () => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        if (failure) return reject(failure);
        if (exitCode === undefined) {
          return reject(
            new ThopterError(
              'transport',
              `the SSH connection to ${this.target.label} dropped during ${name}`,
              true,
            ),
          );
        }
        resolve({ exitCode, stdout, stderr });
      });
    });
  }

  private broken(err: Error, what: string): ThopterError {
    return new ThopterError(
      'transport',
      `SSH to ${this.target.label} could not run ${what}: ${err.message}`,
      true,
      { cause: err },
    );
  }

  private sftp(): Promise<SFTPWrapper> {
    this.sftpChannel ??= new Promise<SFTPWrapper>((resolve, reject) => {
      this.client.sftp((err, sftp) => (err ? reject(this.broken(err, 'sftp')) : resolve(sftp)));
    });
    this.sftpChannel.catch(() => (this.sftpChannel = undefined));
    return this.sftpChannel;
  }

  private async mkdirs(dir: string): Promise<void> {
    const sftp = await this.sftp();
    const missing: string[] = [];
    for (let d = dir; d !== path.dirname(d); d = path.dirname(d)) {
      if (await statOk(sftp, d)) break;
      missing.unshift(d);
    }
    for (const d of missing) {
      await new Promise<void>((resolve, reject) =>
        // Another writer may have made it meanwhile: that is fine.
        sftp.mkdir(d, (err) => (err && !/exist|failure/i.test(err.message) ? reject(err) : resolve())),
      );
    }
  }

  async writeFile(p: string, data: string | Buffer, mode = 0o644): Promise<void> {
    const sftp = await this.sftp();
    await this.mkdirs(path.dirname(p));
    // Narrow an existing file's mode before the new content lands in it (a token file, say).
    await new Promise<void>((resolve) => sftp.chmod(p, mode, () => resolve()));
    await new Promise<void>((resolve, reject) =>
      sftp.writeFile(p, data, { mode }, (err) => (err ? reject(this.fileError(err, p)) : resolve())),
    );
    await new Promise<void>((resolve, reject) =>
      sftp.chmod(p, mode, (err) => (err ? reject(this.fileError(err, p)) : resolve())),
    );
  }

  async appendFile(p: string, data: string): Promise<void> {
    const sftp = await this.sftp();
    await this.mkdirs(path.dirname(p));
    await new Promise<void>((resolve, reject) =>
      sftp.appendFile(p, data, (err) => (err ? reject(this.fileError(err, p)) : resolve())),
    );
  }

  async exists(p: string): Promise<boolean> {
    return statOk(await this.sftp(), p);
  }

  async readFile(p: string): Promise<Buffer> {
    const sftp = await this.sftp();
    return new Promise((resolve, reject) =>
      sftp.readFile(p, (err, data) => (err ? reject(this.fileError(err, p)) : resolve(data))),
    );
  }

  private fileError(err: Error, p: string): ThopterError {
    return new ThopterError('transport', `SFTP on ${this.target.label}: ${p}: ${err.message}`, !this.closed, {
      cause: err,
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await new Promise<void>((resolve) => {
      this.client.once('close', () => resolve());
      this.client.end();
      setTimeout(resolve, 2000).unref();
    });
  }
}

function statOk(sftp: SFTPWrapper, p: string): Promise<boolean> {
  return new Promise((resolve) => sftp.stat(p, (err) => resolve(!err)));
}
