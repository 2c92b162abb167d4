/* global module, process, __dirname */
// The long-running helpers of a thopter, started by init.sh with `pm2 start` (seed phase 3, step 10).
//
// pm2 itself runs as root (PM2_HOME=/root/.pm2, out of the agent's reach): the agent can kill a
// helper that runs as its own user, but cannot stop pm2 from starting it again, nor touch the
// firewall refresh, which needs root for nft. Logs go to /thopter/logs (root's directory, readable
// by the thopter user and so by the hub over SSH), never into the agent's home: a root process
// appending to a path the agent controls could be pointed at any file through a symbolic link.
//
// The apps depend on init's environment: THOPTER_ROLE=golden has no observer (a golden claude has
// no thopter to report on), and DANGEROUSLY_SKIP_FIREWALL=I_UNDERSTAND has no firewall to refresh.

const here = __dirname;
const logs = '/thopter/logs';
const golden = process.env.THOPTER_ROLE === 'golden';
const noFirewall = process.env.DANGEROUSLY_SKIP_FIREWALL === 'I_UNDERSTAND';

/** What every helper shares: restarted when it dies, later and later while it keeps dying (up to 15 s). */
const base = (name) => ({
  name,
  autorestart: true,
  exp_backoff_restart_delay: 1000,
  out_file: `${logs}/${name}.log`,
  error_file: `${logs}/${name}.log`,
  time: true,
  pmx: false,
});

/** As the agent's own user, in its home: what it writes there is the agent's. */
const asThopter = {
  uid: 'thopter',
  gid: 'thopter',
  cwd: '/data/thopter',
};

const apps = [];

if (!golden) {
  apps.push({
    ...base('observer'),
    ...asThopter,
    // The observer is one bundled file (npm run build:observer); node runs it directly.
    script: process.execPath,
    args: [`${here}/observer.mjs`],
    interpreter: 'none',
    // It reads its token from /data/thopter/.thopter/status-token, never from the environment.
    env: {
      HOME: '/data/thopter',
      USER: 'thopter',
      HUB_STATUS_URL: process.env.HUB_STATUS_URL ?? '',
      THOPTER_ID: process.env.THOPTER_ID ?? '',
    },
  });
}

apps.push({
  ...base('session-log'),
  ...asThopter,
  script: `${here}/session-log.sh`,
  interpreter: 'none',
  env: { HOME: '/data/thopter', USER: 'thopter' },
});

if (!noFirewall) {
  apps.push({
    ...base('firewall-refresh'),
    // Root: it rewrites the nftables sets of allowed addresses as the allowed names resolve anew.
    script: `${here}/firewall.sh`,
    args: ['refresh-loop'],
    interpreter: 'none',
  });
}

module.exports = { apps };
