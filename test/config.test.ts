import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseDocument, stringify as toYaml } from 'yaml';
import { Browser, formFields, queryOf } from './helpers/browser.ts';
import { API, BILLING, baseConfig, claimsOf, getToken, introspect, postForm, secret } from './helpers/oauth.ts';
import {
  type ConfigObject,
  freePort,
  makeTempDir,
  type RunningServer,
  runPortcullis,
  spawnPortcullis,
  startServer,
} from './helpers/server.ts';

const tempDirs: string[] = [];
const servers: RunningServer[] = [];
afterAll(async () => {
  for (const s of servers) await s.close();
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

function envWithout(...names: string[]): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const n of names) delete env[n];
  delete env.PORTCULLIS_KEK;
  return env;
}

/** Writes a config (with storage and kek in the dir) and runs `start` expecting it to refuse. */
async function startInvalid(config: ConfigObject, env: NodeJS.ProcessEnv = envWithout()) {
  const dir = makeTempDir();
  tempDirs.push(dir);
  const port = await freePort();
  const full = {
    listen: { host: '127.0.0.1', port },
    storage: { url: `sqlite:${join(dir, 'p.db')}` },
    ...config,
    keys: { kek_file: join(dir, 'kek'), ...((config.keys as object | undefined) ?? {}) },
  };
  const path = join(dir, 'portcullis.yaml');
  writeFileSync(path, toYaml(full));
  return runPortcullis(['start', '--config', path], { cwd: dir, env, timeoutMs: 15_000 });
}

/** stderr lines that name `path` at their start (ignoring indentation and list bullets). */
function problemLines(stderr: string, path: string): string[] {
  return stderr.split('\n').filter((l) => l.replace(/^\s*(?:[-*•]\s*)?/, '').startsWith(path));
}

function validBase(): ConfigObject {
  return {
    resources: [{ identifier: API, scopes: ['orders:read'] }],
    clients: [{ client_id: 'svc', client_secret: secret(), scope: 'orders:read' }],
  };
}

/** Adds a gateway with one valid route, changed by `over`. */
function withRoute(c: ConfigObject, over: Record<string, unknown>): void {
  const route = { path_prefix: '/o', upstream: 'http://127.0.0.1:1', resource: API, scopes: { GET: ['orders:read'] } };
  Object.assign(c, { gateway: { routes: [{ ...route, ...over }] } });
}

describe('invalid configurations are refused', () => {
  const cases: Array<[string, (c: ConfigObject) => void, string, RegExp?]> = [
    ['unknown top-level key', (c) => Object.assign(c, { bogus_key: 1 }), '', /bogus_key/],
    [
      'unknown nested key',
      (c) => Object.assign((c.clients as ConfigObject[])[0]!, { client_sekret: 'x' }),
      'clients[0]',
      /client_sekret/,
    ],
    ['bad type', (c) => Object.assign(c, { limits: { body_bytes: 'lots' } }), 'limits.body_bytes'],
    [
      'checkpoint sink of an unknown type',
      (c) => Object.assign(c, { audit: { checkpoint_sinks: [{ type: 'ftp', path: '/x' }] } }),
      'audit.checkpoint_sinks[0].type',
    ],
    [
      'checkpoint webhook that is not http(s)',
      (c) => Object.assign(c, { audit: { checkpoint_sinks: [{ type: 'webhook', url: 'ftp://siem.example.com/' }] } }),
      'audit.checkpoint_sinks[0].url',
    ],
    [
      'gateway route for an undeclared resource',
      (c) => withRoute(c, { resource: 'https://nope.example.com' }),
      'gateway.routes[0].resource',
    ],
    [
      'gateway route needing a scope its resource does not have',
      (c) => withRoute(c, { scopes: { GET: ['invoices:read'] } }),
      'gateway.routes[0].scopes.GET',
    ],
    [
      'gateway route with an unknown method',
      (c) => withRoute(c, { scopes: { FETCH: ['orders:read'] } }),
      'gateway.routes[0].scopes',
      /FETCH/,
    ],
    [
      'gateway route with a dot segment in its prefix',
      (c) => withRoute(c, { path_prefix: '/o/../admin' }),
      'gateway.routes[0].path_prefix',
    ],
    [
      'gateway accepting HMAC tokens',
      (c) => Object.assign(c, { gateway: { accepted_algorithms: ['HS256'] } }),
      'gateway.accepted_algorithms[0]',
    ],
    [
      'gateway public_origin with a path',
      (c) => Object.assign(c, { gateway: { public_origin: 'https://gw.example.com/api' } }),
      'gateway.public_origin',
      /must be an origin/,
    ],
    [
      'gateway public_origin that is not http(s)',
      (c) => Object.assign(c, { gateway: { public_origin: 'ftp://gw.example.com' } }),
      'gateway.public_origin',
    ],
    [
      'parameter_bytes too small for an access token',
      (c) => Object.assign(c, { limits: { parameter_bytes: 100 } }),
      'limits.parameter_bytes',
      /at least 1024/,
    ],
    [
      'missing secret for client_secret_basic',
      (c) => delete (c.clients as ConfigObject[])[0]!.client_secret,
      'clients[0].client_secret',
    ],
    [
      'missing secret for client_secret_post',
      (c) => {
        const cl = (c.clients as ConfigObject[])[0]!;
        delete cl.client_secret;
        cl.token_endpoint_auth_method = 'client_secret_post';
      },
      'clients[0].client_secret',
    ],
    [
      'password grant',
      (c) => Object.assign((c.clients as ConfigObject[])[0]!, { grant_types: ['password'] }),
      'clients[0].grant_types',
      /password/,
    ],
    [
      'implicit grant',
      (c) => Object.assign((c.clients as ConfigObject[])[0]!, { grant_types: ['client_credentials', 'implicit'] }),
      'clients[0].grant_types',
      /implicit/,
    ],
    [
      'bad duration',
      (c) => Object.assign(c, { tokens: { access_token_ttl: 'ten minutes' } }),
      'tokens.access_token_ttl',
    ],
    ['bad signing algorithm', (c) => Object.assign(c, { keys: { algorithm: 'HS256' } }), 'keys.algorithm'],
    [
      'webhook export sink without a url',
      (c) => Object.assign(c, { audit: { export_sinks: [{ name: 'siem', type: 'webhook' }] } }),
      'audit.export_sinks[0].url',
      /required for a webhook sink/,
    ],
    [
      'syslog export sink with a file path',
      (c) =>
        Object.assign(c, {
          audit: { export_sinks: [{ name: 's', type: 'syslog', host: 'h', port: 514, path: '/tmp/x' }] },
        }),
      'audit.export_sinks[0].path',
      /does not apply to a syslog sink/,
    ],
    [
      'two export sinks with one name',
      (c) =>
        Object.assign(c, {
          audit: {
            export_sinks: [
              { name: 'a', type: 'file', path: '/tmp/a' },
              { name: 'a', type: 'file', path: '/tmp/b' },
            ],
          },
        }),
      'audit.export_sinks[1].name',
      /used twice/,
    ],
    [
      'client scope not defined by any resource',
      (c) => Object.assign((c.clients as ConfigObject[])[0]!, { scope: 'orders:read admin:all' }),
      'clients[0].scope',
      /admin:all/,
    ],
    [
      'client resource not defined',
      (c) => Object.assign((c.clients as ConfigObject[])[0]!, { resources: ['https://nope.example.com'] }),
      'clients[0].resources',
    ],
    [
      'short client secret',
      (c) => Object.assign((c.clients as ConfigObject[])[0]!, { client_secret: 'short' }),
      'clients[0].client_secret',
    ],
    [
      '${env:UNSET}',
      (c) =>
        Object.assign((c.clients as ConfigObject[])[0]!, { client_secret: '${env:PORTCULLIS_TEST_SURELY_UNSET_VAR}' }),
      'clients[0].client_secret',
      /PORTCULLIS_TEST_SURELY_UNSET_VAR/,
    ],
    [
      '${file:missing}',
      (c) => Object.assign((c.clients as ConfigObject[])[0]!, { client_secret: '${file:./no-such-file.txt}' }),
      'clients[0].client_secret',
      /no-such-file/,
    ],
  ];

  it.each(cases)('%s -> exit non-zero, one stderr line naming the key', async (_name, mutate, path, mention) => {
    const config = validBase();
    mutate(config);
    const r = await startInvalid(config, envWithout('PORTCULLIS_TEST_SURELY_UNSET_VAR'));
    expect(r.timedOut, `server did not exit; stdout: ${r.stdout.slice(-2000)}`).toBe(false);
    expect(r.code, r.stderr).not.toBe(0);
    expect(r.code).not.toBeNull();
    expect(r.stdout).not.toMatch(/"msg":"listening"/);
    const lines = path ? problemLines(r.stderr, path) : r.stderr.split('\n').filter((l) => mention?.test(l));
    expect(lines, `stderr:\n${r.stderr}`).toHaveLength(1);
    if (mention) expect(lines[0]).toMatch(mention);
    // No stack traces for a user mistake.
    expect(r.stderr).not.toMatch(/\n\s+at .+:\d+:\d+/);
  });

  it('several problems -> one line each', async () => {
    const config = validBase();
    config.tokens = { access_token_ttl: 'forever' };
    config.clients = [
      { client_id: 'a', scope: 'orders:read' },
      { client_id: 'b', client_secret: secret(), scope: 'nope:scope' },
      { client_id: 'c', client_secret: secret(), scope: 'orders:read', grant_types: ['password'] },
    ];
    const r = await startInvalid(config);
    expect(r.code, r.stderr).not.toBe(0);
    // Zod and cross-field checks may run in stages; at least the schema-level ones must all be listed together.
    const ttl = problemLines(r.stderr, 'tokens.access_token_ttl');
    const grant = problemLines(r.stderr, 'clients[2].grant_types');
    expect(ttl, r.stderr).toHaveLength(1);
    expect(grant, r.stderr).toHaveLength(1);
  });

  it('several cross-field problems -> one line each', async () => {
    const config = validBase();
    config.clients = [
      { client_id: 'a', scope: 'orders:read' },
      { client_id: 'b', client_secret: secret(), scope: 'nope:scope' },
    ];
    const r = await startInvalid(config);
    expect(r.code, r.stderr).not.toBe(0);
    expect(problemLines(r.stderr, 'clients[0].client_secret'), r.stderr).toHaveLength(1);
    expect(problemLines(r.stderr, 'clients[1].scope'), r.stderr).toHaveLength(1);
  });

  it('a config file that does not exist -> exit non-zero with a message', async () => {
    const dir = makeTempDir();
    tempDirs.push(dir);
    const r = await runPortcullis(['start', '--config', join(dir, 'missing.yaml')], {
      cwd: dir,
      env: envWithout(),
      timeoutMs: 15_000,
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/missing\.yaml/);
  });

  it('invalid YAML -> exit non-zero with a message', async () => {
    const dir = makeTempDir();
    tempDirs.push(dir);
    const path = join(dir, 'bad.yaml');
    writeFileSync(path, 'clients: [\n  - {client_id: "x"\n');
    const r = await runPortcullis(['start', '--config', path], { cwd: dir, env: envWithout(), timeoutMs: 15_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr.length).toBeGreaterThan(0);
  });
});

describe('secret substitution', () => {
  it('${env:X} and ${file:P} (relative to the config file) are substituted', async () => {
    const base = baseConfig();
    const envSecret = secret();
    const fileSecret = secret();
    const clients = base.config.clients as ConfigObject[];
    clients[0]!.client_secret = '${env:PORTCULLIS_TEST_SVC_SECRET}';
    clients[1]!.client_secret = '${file:poster-secret.txt}';
    const server = await startServer(base.config, {
      env: { PORTCULLIS_TEST_SVC_SECRET: envSecret },
      files: { 'poster-secret.txt': `${fileSecret}\n` },
    });
    servers.push(server);
    await getToken(server, { client_id: 'svc', client_secret: envSecret });
    const post = await postForm(`${server.url}/token`, {
      grant_type: 'client_credentials',
      client_id: 'poster',
      client_secret: fileSecret,
    });
    expect(post.status, post.text).toBe(200);
    // The literal reference is not a valid secret.
    await expect(
      getToken(server, { client_id: 'svc', client_secret: '${env:PORTCULLIS_TEST_SVC_SECRET}' }),
    ).rejects.toThrow(/401/);
    // The file's trailing newline is not part of the secret.
    const nl = await postForm(`${server.url}/token`, {
      grant_type: 'client_credentials',
      client_id: 'poster',
      client_secret: `${fileSecret}\n`,
    });
    expect(nl.status).toBe(401);
    await server.stop();
  });

  it('JSON config and PORTCULLIS_KEK work (no kek file written)', async () => {
    const base = baseConfig();
    const server = await startServer(base.config, { format: 'json', kekEnv: true });
    servers.push(server);
    await getToken(server, base.clients.svc);
    expect(existsSync(join(server.dir, 'kek'))).toBe(false);
    expect(existsSync(join(server.dir, 'data', 'kek'))).toBe(false);
  });

  it('the kek file is created 0600', async () => {
    const base = baseConfig();
    const server = await startServer(base.config);
    servers.push(server);
    const mode = statSync(join(server.dir, 'kek')).mode & 0o777;
    expect(mode.toString(8)).toBe('600');
  });

  it('a different PORTCULLIS_KEK on restart is refused with a clear message (keys cannot be decrypted)', async () => {
    const base = baseConfig();
    const server = await startServer(base.config, { kekEnv: true });
    servers.push(server);
    await getToken(server, base.clients.svc);
    await server.stop();
    server.env.PORTCULLIS_KEK = Buffer.alloc(32, 7).toString('base64');
    const err = await server.restart().then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err, 'server started with the wrong KEK').toBeInstanceOf(Error);
    expect(err!.message).toMatch(/exited \(code [1-9]/);
    expect(err!.message).toMatch(/key-encryption|KEK|decrypt/i);
  });
});

describe('settings take effect', () => {
  it('tokens.access_token_ttl, per-resource access_token_ttl and limits.body_bytes', async () => {
    const base = baseConfig();
    base.config.tokens = { access_token_ttl: '5m' };
    (base.config.resources as ConfigObject[])[1]!.access_token_ttl = '2m';
    // parameter_bytes must leave room for a JWT access token (~700 bytes) at /introspect and /revoke.
    base.config.limits = { body_bytes: 4096, parameter_bytes: 1024 };
    const server = await startServer(base.config);
    servers.push(server);
    const svcTok = await getToken(server, base.clients.svc);
    expect(svcTok.body.expires_in).toBe(300);
    const c = claimsOf(svcTok.access_token);
    expect(c.exp! - c.iat!).toBe(300);
    const billTok = await getToken(server, base.clients.multi, { resource: BILLING });
    expect(billTok.body.expires_in).toBe(120);
    const b = claimsOf(billTok.access_token);
    expect(b.exp! - b.iat!).toBe(120);

    const big = await postForm(
      `${server.url}/token`,
      `grant_type=client_credentials&x=${'a'.repeat(900)}&y=${'a'.repeat(900)}&z=${'a'.repeat(900)}&w=${'a'.repeat(900)}&v=${'a'.repeat(900)}`,
      {
        basic: [base.clients.svc.client_id, base.clients.svc.client_secret],
      },
    );
    expect(big.status, big.text).toBe(413);
    const param = await postForm(`${server.url}/token`, `grant_type=client_credentials&scope=${'a'.repeat(1100)}`, {
      basic: [base.clients.svc.client_id, base.clients.svc.client_secret],
    });
    expect(param.status, param.text).toBe(400);
    expect(param.json?.error).toBe('invalid_request');

    await server.advanceClock(121);
    expect(JSON.parse((await introspect(server, base.clients.multi, billTok.access_token)).text)).toStrictEqual({
      active: false,
    });
    expect((await introspect(server, base.clients.svc, svcTok.access_token)).json?.active).toBe(true);
    await server.advanceClock(180);
    expect(JSON.parse((await introspect(server, base.clients.svc, svcTok.access_token)).text)).toStrictEqual({
      active: false,
    });
  });
});

describe('SIGTERM', () => {
  it('exits 0 (stop() asserts the exit code)', async () => {
    const base = baseConfig();
    const server = await startServer(base.config);
    servers.push(server);
    await getToken(server, base.clients.svc);
    await server.stop();
    expect(server.running).toBe(false);
  });
});

describe('init', () => {
  it('writes a starter file that starts and issues a token', async () => {
    const dir = makeTempDir();
    tempDirs.push(dir);
    const env = envWithout();
    const r = await runPortcullis(['init', '--output', 'portcullis.yaml'], { cwd: dir, env });
    expect(r.code, r.stderr).toBe(0);
    const path = join(dir, 'portcullis.yaml');
    expect(existsSync(path)).toBe(true);
    expect((statSync(path).mode & 0o077).toString(8), 'starter holds a secret: not readable by others').toBe('0');

    // Refuses to overwrite without --force.
    const again = await runPortcullis(['init', '--output', 'portcullis.yaml'], { cwd: dir, env });
    expect(again.code).not.toBe(0);

    const m = /client (\S+) secret: (\S+)/.exec(r.stdout);
    expect(m, `init stdout: ${r.stdout}`).not.toBeNull();
    const [, clientId, clientSecret] = m!;

    // Move it to a free port, as a user would.
    const port = await freePort();
    const doc = parseDocument(readFileSync(path, 'utf8'));
    doc.setIn(['listen', 'port'], port);
    if (doc.has('issuer')) doc.set('issuer', `http://127.0.0.1:${port}`);
    writeFileSync(path, doc.toString());

    const proc = spawnPortcullis(['start', '--config', path], { cwd: dir, env });
    try {
      const line = await proc.ready;
      const url = String(line.url ?? `http://127.0.0.1:${port}`).replace(/\/$/, '');
      const tok = await postForm(
        `${url}/token`,
        { grant_type: 'client_credentials' },
        { basic: [clientId!, clientSecret!] },
      );
      expect(tok.status, tok.text).toBe(200);
      expect(tok.json?.access_token).toEqual(expect.any(String));
    } finally {
      const exit = await proc.terminate();
      expect(exit.code, proc.stderr()).toBe(0);
    }
  });
});

function portInUse(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

/** Splits a shell command line into words (single/double quotes, no expansion). */
function shellWords(line: string): string[] {
  const out: string[] = [];
  const re = /'([^']*)'|"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(line); m; m = re.exec(line)) out.push(m[1] ?? m[2]?.replace(/\\(.)/g, '$1') ?? m[3]!);
  return out;
}

/** Runs the printed curl command with fetch: -u user:pass, -d k=v (repeatable), URL. */
async function runCurl(cmd: string) {
  const words = shellWords(cmd.slice(cmd.indexOf('curl')));
  let user: string | undefined;
  const data: string[] = [];
  let url: string | undefined;
  const headers: Record<string, string> = {};
  for (let i = 1; i < words.length; i++) {
    const w = words[i]!;
    if (w === '-u' || w === '--user') user = words[++i];
    else if (w === '-d' || w === '--data' || w === '--data-urlencode') data.push(words[++i]!);
    else if (w === '-H' || w === '--header') {
      const [k, ...v] = words[++i]!.split(':');
      headers[k!.trim().toLowerCase()] = v.join(':').trim();
    } else if (w === '-X') i++;
    else if (/^https?:\/\//.test(w)) url = w;
  }
  expect(url, `no URL in: ${cmd}`).toBeDefined();
  if (user) headers.authorization = `Basic ${Buffer.from(user).toString('base64')}`;
  headers['content-type'] ??= 'application/x-www-form-urlencoded';
  const res = await fetch(url!, { method: 'POST', headers, body: data.join('&') });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('demo mode (no --config)', () => {
  it('prints demo client credentials and a curl that gets a token; SIGTERM exits 0', async () => {
    if (await portInUse(9000)) {
      console.warn('\n*** SKIPPING demo-mode test: 127.0.0.1:9000 is in use (demo mode always listens on 9000) ***\n');
      return;
    }
    const dir = makeTempDir();
    tempDirs.push(dir);
    const env = envWithout();
    const run = async () => {
      const proc = spawnPortcullis(['start'], { cwd: dir, env });
      try {
        await proc.ready;
        // The banner may be written just after the listening line.
        for (let i = 0; i < 50 && !/curl /.test(proc.stderr() + proc.stdout()); i++)
          await new Promise((r) => setTimeout(r, 100));
        const text = `${proc.stderr()}\n${proc.stdout()}`;
        const curl = text.split('\n').find((l) => /\bcurl\s/.test(l));
        expect(curl, `no curl line in output:\n${text}`).toBeDefined();
        const secretLine = text.split('\n').find((l) => /client_secret/.test(l));
        expect(secretLine).toBeDefined();
        const r = await runCurl(curl!);
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        expect(r.body.access_token).toEqual(expect.any(String));
        return curl!;
      } finally {
        const exit = await proc.terminate();
        expect(exit.code, proc.stderr()).toBe(0);
      }
    };
    const first = await run();
    expect(existsSync(join(dir, 'data'))).toBe(true);
    // A second start on the same ./data keeps the same demo client.
    const second = await run();
    expect(second).toBe(first);
  });

  it('prints a sign-in URL, the demo user and the code exchange; they work end to end', async () => {
    if (await portInUse(9000)) {
      console.warn('\n*** SKIPPING demo sign-in test: 127.0.0.1:9000 is in use ***\n');
      return;
    }
    const dir = makeTempDir();
    tempDirs.push(dir);
    const proc = spawnPortcullis(['start'], { cwd: dir, env: envWithout() });
    try {
      await proc.ready;
      for (let i = 0; i < 50 && !/code=CODE/.test(proc.stderr()); i++) await new Promise((r) => setTimeout(r, 100));
      const text = proc.stderr();
      const url = /^\s+(http:\/\/127\.0\.0\.1:9000\/authorize\?\S+)$/m.exec(text)?.[1];
      const password = /sign in as demo \/ (\S+),/.exec(text)?.[1];
      const exchange = text.split('\n').find((l) => l.includes('code=CODE'));
      expect(url && password && exchange, text).toBeTruthy();
      const b = new Browser('http://127.0.0.1:9000');
      let r = await b.follow(await b.get(url!));
      r = await b.post('/login', { ...formFields(r.body, '/login'), username: 'demo', password: password! });
      r = await b.follow(r);
      r = await b.post('/consent', { ...formFields(r.body, '/consent'), decision: 'approve' });
      const code = queryOf(r.location).code;
      expect(r.location?.startsWith('http://127.0.0.1/callback?'), r.location).toBe(true);
      const t = await runCurl(exchange!.replace('code=CODE', `code=${code}`));
      expect(t.status, JSON.stringify(t.body)).toBe(200);
      expect(t.body.id_token).toEqual(expect.any(String));
    } finally {
      const exit = await proc.terminate();
      expect(exit.code, proc.stderr()).toBe(0);
    }
  });
});
