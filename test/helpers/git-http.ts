import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A git server over smart HTTP, as github.com serves clones and pushes: `git http-backend` behind
 * a small HTTP server that wants Basic auth with a token as the password (any user name), as
 * GitHub does for PATs. The hub's credential helper has to hand git the token for a clone or a
 * push to work at all.
 */
export class GitHttpServer {
  private server?: Server;
  url = '';
  /** Every request: method, path and whether it carried the right token. */
  readonly requests: { method: string; path: string; authorized: boolean }[] = [];

  constructor(
    /** The folder holding bare repositories: `{root}/acme/widget.git` is `{url}/acme/widget.git`. */
    private readonly root: string,
    /**
     * undefined: anyone may clone and push. A function decides per request, given the token, the
     * repository path (`/acme/widget.git`) and whether it is a push (e.g. the fake GitHub's gitAccess).
     */
    private readonly token:
      string | undefined | ((token: string, repoPath: string, push: boolean) => boolean),
  ) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  private authorized(req: IncomingMessage, url: URL): boolean {
    if (this.token === undefined) return true;
    const m = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
    if (!m) return false;
    const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
    const given = decoded.slice(decoded.indexOf(':') + 1);
    if (typeof this.token === 'string') return given === this.token;
    const repoPath = /^(.*?\.git)(\/|$)/.exec(url.pathname)?.[1] ?? url.pathname;
    const push =
      url.pathname.endsWith('/git-receive-pack') || url.searchParams.get('service') === 'git-receive-pack';
    return this.token(given, repoPath, push);
  }

  private handle(req: IncomingMessage, res: ServerResponse) {
    const url = new URL(req.url ?? '/', this.url);
    const authorized = this.authorized(req, url);
    this.requests.push({ method: req.method ?? '', path: url.pathname, authorized });
    if (!authorized) {
      // What GitHub answers a private repository without credentials: git then asks its helper.
      res.writeHead(401, { 'www-authenticate': 'Basic realm="GitHub"' }).end('Authentication required\n');
      req.resume();
      return;
    }
    const cgi = spawn('git', ['http-backend'], {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        GIT_PROJECT_ROOT: this.root,
        GIT_HTTP_EXPORT_ALL: '1',
        PATH_INFO: decodeURIComponent(url.pathname),
        QUERY_STRING: url.search.slice(1),
        REQUEST_METHOD: req.method ?? 'GET',
        CONTENT_TYPE: req.headers['content-type'] ?? '',
        HTTP_CONTENT_ENCODING: String(req.headers['content-encoding'] ?? ''),
        GIT_PROTOCOL: String(req.headers['git-protocol'] ?? ''),
        REMOTE_USER: 'x-access-token', // enables receive-pack (push)
        REMOTE_ADDR: req.socket.remoteAddress ?? '',
      },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    req.pipe(cgi.stdin);
    cgi.stdin.on('error', () => {});
    // A CGI answer: header lines, a blank line, then the body.
    let head = Buffer.alloc(0);
    let headersDone = false;
    cgi.stdout.on('data', (chunk: Buffer) => {
      if (headersDone) return void res.write(chunk);
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      headersDone = true;
      let status = 200;
      for (const line of head.subarray(0, end).toString('utf8').split('\r\n')) {
        const colon = line.indexOf(':');
        const name = line.slice(0, colon).trim();
        const value = line.slice(colon + 1).trim();
        if (name.toLowerCase() === 'status') status = Number.parseInt(value, 10);
        else res.setHeader(name, value);
      }
      res.writeHead(status);
      res.write(head.subarray(end + 4));
    });
    cgi.on('close', () => res.end());
  }

  async close(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }
}
