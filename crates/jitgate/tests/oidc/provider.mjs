// A real OpenID Provider for jitgate's sign-in tests: the certified
// `oidc-provider` package with its built-in login pages (any password; the
// login name is the account). Accounts, their groups and the signing key are
// changed by the test through /admin/* on the same loopback port, and a
// misbehaving network can be played at the token endpoint
// (/admin/token-mode?mode=...): the ID token is then tampered with, expired,
// or minted for another audience before jitgate receives it.
//
//   node provider.mjs <port> <client_id> <client_secret> <redirect_uri> [no-device]
//
// `no-device`: without the device authorization grant (as some providers).
//
// Prints "ready <issuer>" once it listens on 127.0.0.1:<port>.

import http from 'node:http';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const [port, clientId, clientSecret, redirectUri, flag] = process.argv.slice(2);
const deviceFlow = flag !== 'no-device';
const issuer = `http://127.0.0.1:${port}`;

const accounts = new Map([
  ['alice', { email: 'alice@example.com', groups: ['engineers'] }],
  ['bob', { email: 'bob@example.com', groups: ['dba'] }],
  ['carol', { email: 'carol@example.com', groups: ['dba'] }],
  ['mallory', { email: 'mallory@evil.example', groups: ['dba'] }],
  ['dave', { email: 'dave@example.com', groups: ['marketing'] }],
  // Another account with alice's address (a reused or recycled mailbox).
  ['impostor', { email: 'alice@example.com', groups: ['dba'] }],
]);

let tokenMode = 'honest';
let keys = [await newKey()];
let provider = build();

async function newKey() {
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  return { ...jwk, kid: `k${Date.now()}${Math.floor(Math.random() * 1e6)}`, alg: 'RS256', use: 'sig' };
}

function build() {
  const p = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: deviceFlow
        ? ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code']
        : ['authorization_code'],
      response_types: ['code'],
    }],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: deviceFlow },
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    conformIdTokenClaims: false,
    findAccount: async (ctx, id) => {
      const a = accounts.get(id);
      if (!a) return undefined;
      return {
        accountId: id,
        claims: async () => ({ sub: id, email: a.email, email_verified: true, groups: a.groups }),
      };
    },
    jwks: { keys },
    cookies: { keys: ['jitgate-test-cookie-key'] },
    ttl: { IdToken: 600, AccessToken: 600, DeviceCode: 600, Interaction: 600, Session: 600, Grant: 600 },
  });
  p.use(misbehave);
  return p;
}

// Runs after the token endpoint answered: rewrites the ID token on its way.
async function misbehave(ctx, next) {
  await next();
  if (ctx.path !== '/token' || tokenMode === 'honest' || !ctx.body || !ctx.body.id_token) return;
  const [h, p, s] = ctx.body.id_token.split('.');
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
  const sign = async (c) => {
    const key = await jose.importJWK(keys[0], 'RS256');
    return new jose.SignJWT(c).setProtectedHeader({ alg: 'RS256', kid: keys[0].kid, typ: 'JWT' }).sign(key);
  };
  const now = Math.floor(Date.now() / 1000);
  if (tokenMode === 'tamper') {
    // Someone on the path makes themselves an approver.
    claims.groups = [...claims.groups, 'dba', 'admins'];
    claims.sub = 'bob';
    ctx.body.id_token = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
  } else if (tokenMode === 'expired') {
    ctx.body.id_token = await sign({ ...claims, iat: now - 7200, exp: now - 3600 });
  } else if (tokenMode === 'wrong_audience') {
    ctx.body.id_token = await sign({ ...claims, aud: 'some-other-client', azp: 'some-other-client' });
  }
  tokenMode = 'honest';
}

function admin(req, res, url) {
  const q = url.searchParams;
  if (url.pathname === '/admin/groups') {
    accounts.get(q.get('user')).groups = q.get('groups') ? q.get('groups').split(',') : [];
  } else if (url.pathname === '/admin/token-mode') {
    tokenMode = q.get('mode');
  } else if (url.pathname === '/admin/rotate') {
    // A new signing key first; the old one stays published for a while, as
    // providers do. Sessions at the provider start over (new instance).
    return newKey().then((k) => {
      keys = [k, ...keys];
      provider = build();
      res.end(k.kid);
    });
  } else {
    res.statusCode = 404;
  }
  res.end('ok');
}

http.createServer((req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname.startsWith('/admin/')) return admin(req, res, url);
  return provider.callback()(req, res);
}).listen(Number(port), '127.0.0.1', () => console.log(`ready ${issuer}`));
