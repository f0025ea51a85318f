// A real OpenID Provider for Smith's tests, built on the npm `oidc-provider` package.
//
// It is what `smith login` signs in with and what `smith-ca --oidc-issuer` verifies ID
// tokens against, on loopback, over plain HTTP (the CA needs --oidc-allow-http).
//
// Usage:
//   node provider.js [--listen 127.0.0.1:0] [--issuer URL] [--accounts FILE]
//                    [--keys FILE] [--rotate] [--id-token-ttl SECS]
//                    [--refresh-token-ttl SECS]
//
// Once ready it prints one line to stdout:
//   oidc-provider listening on http://127.0.0.1:PORT issuer=ISSUER kid=KID
// (KID = the key that signs new ID tokens) and serves until SIGTERM/SIGINT.
//
// - Clients: `smith` (the public native client of `smith login`: no secret, PKCE S256,
//   loopback redirect `http://127.0.0.1:<any port>/callback`, authorization code and
//   device flow) and `smith-other` (same shape, another audience: for wrong-audience
//   tests).
// - Accounts: a JSON array of {sub, preferred_username, name, email, groups, disabled};
//   sign in (devInteractions, any password) with the account's `sub` (oidc-provider makes
//   the login the account id). Without --accounts: `alice-0001` (alice, group dev) and
//   `oscar-0002` (oscar, group ops). The file is read again when it changes: an account
//   removed or `"disabled": true` can no longer sign in or renew (its refresh tokens are
//   refused with invalid_grant), as when an IdP admin disables a person.
// - Refresh tokens: issued for the `offline_access` scope (oidc-provider's rule, as at
//   Okta or Keycloak), rotated at every use (a public client), living
//   --refresh-token-ttl seconds (default 86400); RFC 7009 revocation at /token/revocation.
//   ID tokens carry `auth_time` when the request has `max_age` (OIDC Core 3.1.2.1).
// - Counts: GET /__test/counts answers {"authorization": N, "interaction": N,
//   "grants": {GRANT_TYPE: N}, "grant_errors": {GRANT_TYPE: N}}: requests to the
//   authorization endpoint (a browser sign-in starting), to the interaction pages, and
//   token endpoint successes and refusals by grant type, so a test can assert that a
//   renewal opened no browser.
// - Keys: RS256 signing keys. With --keys FILE they persist across restarts (created when
//   missing); --rotate puts a fresh key first (it signs from now on) and keeps the old
//   ones published, as an IdP rotating its keys does.
// - ID tokens carry the profile and groups claims (conformIdTokenClaims off), like an
//   Okta or Entra app configured with a groups claim.
//
// Test-only: devInteractions accept any password. Never expose this beyond loopback.

import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import Provider from 'oidc-provider';

function parseArgs(argv) {
  const out = {
    listen: '127.0.0.1:0', issuer: undefined, accounts: undefined, keys: undefined,
    rotate: false, idTokenTtl: 600, refreshTokenTtl: 86400,
  };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    const next = () => {
      i += 1;
      if (i >= argv.length) throw new Error(`${a} needs a value`);
      return argv[i];
    };
    switch (a) {
      case '--listen': out.listen = next(); break;
      case '--issuer': out.issuer = next(); break;
      case '--accounts': out.accounts = next(); break;
      case '--keys': out.keys = next(); break;
      case '--rotate': out.rotate = true; break;
      case '--id-token-ttl': out.idTokenTtl = Number.parseInt(next(), 10); break;
      case '--refresh-token-ttl': out.refreshTokenTtl = Number.parseInt(next(), 10); break;
      case '--help':
        process.stdout.write('see the comment at the top of provider.js\n');
        process.exit(0);
        break;
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  if (!Number.isInteger(out.idTokenTtl) || out.idTokenTtl < 1) {
    throw new Error('--id-token-ttl must be a positive number of seconds');
  }
  if (!Number.isInteger(out.refreshTokenTtl) || out.refreshTokenTtl < 1) {
    throw new Error('--refresh-token-ttl must be a positive number of seconds');
  }
  return out;
}

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: randomBytes(9).toString('base64url'), alg: 'RS256', use: 'sig' };
}

function loadKeys(file, rotate) {
  let keys = [];
  if (file && existsSync(file)) {
    keys = JSON.parse(readFileSync(file, 'utf8')).keys;
  }
  if (keys.length === 0 || rotate) {
    keys.unshift(newKey());
  }
  if (file) {
    writeFileSync(file, JSON.stringify({ keys }, null, 2), { mode: 0o600 });
  }
  return keys;
}

const DEFAULT_ACCOUNTS = [
  {
    sub: 'alice-0001', preferred_username: 'alice', name: 'Alice Example', email: 'alice@example.com', groups: ['dev'],
  },
  {
    sub: 'oscar-0002', preferred_username: 'oscar', name: 'Oscar Example', email: 'oscar@example.com', groups: ['ops'],
  },
];

function parseAccounts(list) {
  if (!Array.isArray(list)) throw new Error('the accounts file must hold a JSON array');
  const bySub = new Map();
  for (const acct of list) {
    if (typeof acct.sub !== 'string' || acct.sub === '') throw new Error('every account needs a "sub"');
    bySub.set(acct.sub, acct);
  }
  return bySub;
}

// A lookup that reads FILE again whenever it changes (an admin disabling a person).
function loadAccounts(file) {
  if (!file) {
    const bySub = parseAccounts(DEFAULT_ACCOUNTS);
    return (id) => bySub.get(id);
  }
  let seen = '';
  let bySub = new Map();
  return (id) => {
    const st = statSync(file);
    const version = `${st.ino}:${st.mtimeMs}`;
    if (version !== seen) {
      bySub = parseAccounts(JSON.parse(readFileSync(file, 'utf8')));
      seen = version;
    }
    const acct = bySub.get(id);
    return acct && !acct.disabled ? acct : undefined;
  };
}

function nativeClient(clientId) {
  return {
    client_id: clientId,
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    redirect_uris: ['http://127.0.0.1/callback', 'http://[::1]/callback'],
    grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
    response_types: ['code'],
  };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const find = loadAccounts(args.accounts);
  const keys = loadKeys(args.keys, args.rotate);
  const sep = args.listen.lastIndexOf(':');
  if (sep < 0) throw new Error('--listen must be HOST:PORT');
  const host = args.listen.slice(0, sep).replace(/^\[|\]$/g, '');
  const port = Number.parseInt(args.listen.slice(sep + 1), 10);

  const server = createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const addr = server.address();
  const hostPart = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const base = `http://${hostPart}:${addr.port}`;
  const issuer = args.issuer ?? base;

  const configuration = {
    clients: [nativeClient('smith'), nativeClient('smith-other')],
    jwks: { keys },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email'],
      groups: ['groups'],
    },
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      revocation: { enabled: true },
    },
    ttl: {
      IdToken: args.idTokenTtl,
      AccessToken: 600,
      RefreshToken: args.refreshTokenTtl,
      AuthorizationCode: 120,
      DeviceCode: 600,
      Grant: 3600,
      Interaction: 600,
      Session: 3600,
    },
    async findAccount(ctx, id) {
      const acct = find(id);
      if (!acct) return undefined;
      return {
        accountId: acct.sub,
        async claims() {
          const claims = { sub: acct.sub };
          for (const k of ['preferred_username', 'name', 'email', 'groups']) {
            if (acct[k] !== undefined) claims[k] = acct[k];
          }
          return claims;
        },
      };
    },
  };

  const provider = new Provider(issuer, configuration);
  provider.on('server_error', (ctx, err) => process.stderr.write(`oidc-provider: server_error: ${err.stack}\n`));
  const counts = {
    authorization: 0, interaction: 0, grants: {}, grant_errors: {},
  };
  const bump = (map, key) => { map[key] = (map[key] ?? 0) + 1; };
  provider.on('grant.success', (ctx) => bump(counts.grants, ctx.oidc.params?.grant_type ?? '?'));
  provider.on('grant.error', (ctx) => bump(counts.grant_errors, ctx.oidc?.params?.grant_type ?? '?'));
  const handle = provider.callback();
  server.on('request', (req, res) => {
    const path = new URL(req.url, base).pathname;
    if (path === '/__test/counts') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(counts));
      return;
    }
    if (path === '/auth') counts.authorization += 1;
    if (path.startsWith('/interaction/')) counts.interaction += 1;
    handle(req, res);
  });

  process.stdout.write(`oidc-provider listening on ${base} issuer=${issuer} kid=${keys[0].kid}\n`);
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  process.stderr.write(`oidc-provider: ${err.message}\n`);
  process.exit(1);
});
