// oidc-server.mjs - throw-away OpenID Connect provider for the integration tests (npm oidc-provider
// by panva, v9, installed by `npm ci` from the repository's package-lock.json). Adapted from
// shared/testbeds/oidc: a third user whose groups map to no console role.
// Loopback only. One static confidential client, static users with passwords, a tiny
// HTML login form at /interaction/:uid that a test can POST to without a browser,
// consent skipped for the first-party client (loadExistingGrant).
//
//   npm ci   # at the repository root
//   OIDC_PORT=9400 REDIRECT_URI=http://127.0.0.1:8080/callback node oidc-server.mjs
// Env: OIDC_PORT (default 9400, 0 = pick free), CLIENT_ID (console), CLIENT_SECRET (console-secret),
//      REDIRECT_URI (http://127.0.0.1:8080/callback), POST_LOGOUT_REDIRECT_URI (http://127.0.0.1:8080/)
// Prints one line "OIDC_ISSUER=http://127.0.0.1:PORT" on stdout when ready.
import http from 'node:http';
import crypto from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const HOST = '127.0.0.1';
const REQ_PORT = Number(process.env.OIDC_PORT ?? 9400);
const CLIENT_ID = process.env.CLIENT_ID ?? 'console';
const CLIENT_SECRET = process.env.CLIENT_SECRET ?? 'console-secret';
const REDIRECT_URI = process.env.REDIRECT_URI ?? 'http://127.0.0.1:8080/callback';
const POST_LOGOUT = process.env.POST_LOGOUT_REDIRECT_URI ?? 'http://127.0.0.1:8080/';

const USERS = {
  alice: { password: 'alice-pw', email: 'alice@example.test', name: 'Alice Anderson', groups: ['admins', 'developers'] },
  bob: { password: 'bob-pw', email: 'bob@example.test', name: 'Bob Brown', groups: ['developers'] },
  carol: { password: 'carol-pw', email: 'carol@example.test', name: 'Carol Clark', groups: ['contractors'] },
};

// fresh signing key per run (no dev keys)
const jwk = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
jwk.kid = crypto.randomUUID(); jwk.use = 'sig'; jwk.alg = 'RS256';

const server = http.createServer();
await new Promise((r) => server.listen(REQ_PORT, HOST, r));
const PORT = server.address().port;
const ISSUER = `http://${HOST}:${PORT}`;

const provider = new Provider(ISSUER, {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    redirect_uris: [REDIRECT_URI],
    post_logout_redirect_uris: [POST_LOGOUT],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [jwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  conformIdTokenClaims: false, // put scope claims (email, groups...) into the ID token too
  features: {
    devInteractions: { enabled: false }, // we serve our own minimal form below
    revocation: { enabled: true },
    introspection: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  pkce: { required: () => false }, // PKCE optional for the confidential client (still verified if sent)
  ttl: { AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, Interaction: 600, Session: 3600, Grant: 3600, RefreshToken: 86400 },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const u = USERS[id];
    if (!u) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: u.email, email_verified: true, name: u.name, preferred_username: id, groups: u.groups };
      },
    };
  },
  // first-party client: grant everything requested, no consent screen
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid offline_access email profile groups');
    grant.addOIDCClaims(['sub', 'email', 'email_verified', 'name', 'preferred_username', 'groups']);
    await grant.save();
    return grant;
  },
});

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const form = (uid, error) => `<!doctype html><html><head><title>Sign-in</title></head><body>
<h1>Test IdP sign-in</h1>${error ? `<p id="error" style="color:red">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}">
<label>Username <input id="username" name="username" autofocus></label>
<label>Password <input id="password" name="password" type="password"></label>
<button id="submit" type="submit">Sign in</button></form>
<a id="abort" href="/interaction/${esc(uid)}/abort">Cancel</a></body></html>`;

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return Object.fromEntries(new URLSearchParams(body));
}

const providerHandler = provider.callback();
server.on('request', async (req, res) => {
  const m = req.url.match(/^\/interaction\/([^/?]+)(\/abort)?/);
  if (!m) return providerHandler(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    if (m[2]) {
      return await provider.interactionFinished(req, res,
        { error: 'access_denied', error_description: 'user cancelled' }, { mergeWithLastSubmission: false });
    }
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      return res.end(form(details.uid));
    }
    if (req.method === 'POST') {
      const { username, password } = await readForm(req);
      const u = USERS[username];
      if (!u || u.password !== password) {
        res.writeHead(401, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        return res.end(form(details.uid, 'Invalid username or password'));
      }
      // prompt is "login" first; consent is satisfied by loadExistingGrant
      return await provider.interactionFinished(req, res, { login: { accountId: username } },
        { mergeWithLastSubmission: false });
    }
    res.writeHead(405); res.end();
  } catch (err) {
    const status = err instanceof errors.SessionNotFound ? 400 : 500;
    res.writeHead(status, { 'content-type': 'text/plain' });
    res.end(`${err.name}: ${err.message}`);
  }
});

provider.on('server_error', (ctx, err) => console.error('server_error', err));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('SIGINT', () => server.close(() => process.exit(0)));
console.log(`OIDC_ISSUER=${ISSUER}`);
