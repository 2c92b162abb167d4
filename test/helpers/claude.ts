import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT, api, writeFixture } from './env.js';

/** Where `npm ci` puts the pinned Claude Code (scripts/test.sh runs its postinstall). */
export const CLAUDE_BIN_DIR = path.join(ROOT, 'node_modules', '.bin');

/** A key in Anthropic's shape; only the scripted Messages API accepts it. */
export const TEST_API_KEY = 'sk-ant-api03-test-0123456789abcdefghijklmnopqrstuvwxyz';

/**
 * The thopter's environment for the real `claude` against the scripted Messages API, as an
 * operator writes it into THOPTER_ENV_FILE: the key reaches the agent through this file, never
 * through a command line.
 */
export function claudeEnvFile(dir: string, baseUrl: string, apiKey = TEST_API_KEY): string {
  return writeFixture(
    dir,
    'claude.env',
    [
      `ANTHROPIC_BASE_URL=${baseUrl}`,
      `ANTHROPIC_API_KEY=${apiKey}`,
      'DISABLE_TELEMETRY=1',
      'CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1',
      // --dangerously-skip-permissions refuses to run as root outside a sandbox.
      'IS_SANDBOX=1',
      '',
    ].join('\n'),
  );
}

/**
 * A golden claude made the way a user makes one: the hub makes the empty home
 * (`POST /api/golden-claudes`), and the user runs `claude` in it once, from the folder that holds
 * the thopters' workspaces, answering its first-run prompts. What that leaves behind is written
 * here (a first run cannot be replayed: onboarding checks that api.anthropic.com answers):
 * onboarding done, the custom API key approved (Claude Code keeps the key's last 20 characters),
 * that folder trusted (trust is inherited by every folder below it) and the bypass-permissions
 * warning accepted.
 */
export async function makeGoldenClaude(
  hubUrl: string,
  name: string,
  { trusted, apiKey = TEST_API_KEY }: { trusted: string; apiKey?: string },
): Promise<string> {
  const res = await api(hubUrl, 'POST', '/api/golden-claudes', { name });
  if (res.status !== 201 && res.status !== 200) {
    throw new Error(`the golden claude could not be made: ${res.status} ${JSON.stringify(res.body)}`);
  }
  const home: string = res.body.location;
  const claudeJson = {
    hasCompletedOnboarding: true,
    customApiKeyResponses: { approved: [apiKey.slice(-20)], rejected: [] },
    projects: { [trusted]: { hasTrustDialogAccepted: true } },
  };
  writeFileSync(path.join(home, '.claude.json'), JSON.stringify(claudeJson, null, 2));
  writeFileSync(
    path.join(home, '.claude', 'settings.json'),
    JSON.stringify({ skipDangerousModePermissionPrompt: true }, null, 2),
  );
  return home;
}
