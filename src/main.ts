import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import pino, { type Logger } from 'pino';
import { Exporter, productVersion } from './audit/export.ts';
import { auditOrigin, ensureAuditKey, Sealer } from './audit/sealer.ts';
import { CheckpointSinks } from './audit/sinks.ts';
import { runCli } from './cli/index.ts';
import { buildConfig, loadConfigFile } from './config/load.ts';
import { configFingerprint, reconcileConfig } from './config/reconcile.ts';
import type { Config } from './config/schema.ts';
import {
  DEMO_CLIENT_ID,
  DEMO_CONFIG,
  DEMO_REDIRECT_URI,
  DEMO_RESOURCE,
  DEMO_USERNAME,
  DEMO_WEB_CLIENT_ID,
} from './config/starter.ts';
import { ConfigError } from './errors/oauth-error.ts';
import { type RunningGateway, startGateway } from './gateway/server.ts';
import { buildApp } from './http/app.ts';
import { createMetrics } from './http/metrics.ts';
import { seedTotpSecrets } from './identity/mfa.ts';
import { addUser, setPassword } from './identity/users.ts';
import { type Kek, loadKek } from './keys/kek.ts';
import { KeyManager, type KeyPolicy } from './keys/manager.ts';
import { type Clock, OffsetClock, systemClock } from './lib/clock.ts';
import { type Limiter, MemoryLimiter } from './lib/rate-limiter.ts';
import { hashClientSecret } from './oauth/client-auth/client-secret.ts';
import { CachedClientRegistry, type OAuthContext } from './oauth/context.ts';
import { RevocationFeed } from './oauth/revocation-feed.ts';
import { RevocationSet } from './oauth/revocation-set.ts';
import type { BusChannel } from './storage/bus/bus.ts';
import { PostgresBus } from './storage/bus/postgres.ts';
import { RedisBus } from './storage/bus/redis.ts';
import { GroupCommitter } from './storage/group-commit.ts';
import type { Storage } from './storage/ports.ts';
import { RedisLimiter } from './storage/redis/rate-limiter.ts';
import { RedisReplayStore } from './storage/redis/replay-store.ts';
import { openStorage } from './storage/sql/sql-storage.ts';

export function createLogger(config: Pick<Config, 'log'>): Logger {
  return pino({
    level: config.log.level,
    base: { service: 'portcullis' },
    // Defence in depth: nothing we log should carry these, and if it ever does they are blanked.
    redact: {
      paths: [
        'req.headers.authorization',
        'req.headers.cookie',
        '*.client_secret',
        '*.password',
        '*.access_token',
        '*.refresh_token',
        '*.token',
        '*.client_assertion',
        '*.totp_secret',
        'client_secret',
        'password',
        'access_token',
        'token',
      ],
      censor: '[redacted]',
    },
  });
}

/** The longest lifetime of any token a signing key signs, plus skew: how long a retired key stays published. */
export function keyPolicy(config: Config): KeyPolicy {
  const ttls = [config.tokens.access_token_ttl, ...config.resources.map((r) => r.access_token_ttl ?? 0)];
  return {
    algorithm: config.keys.algorithm,
    rotationPeriod: config.keys.rotation_period,
    jwksMaxAge: config.keys.jwks_max_age,
    maxTokenLifetime: Math.max(...ttls) + config.tokens.clock_skew,
  };
}

/** Loads the file, or the demo configuration when no file is given. */
export function loadConfig(path: string | undefined): { config: Config; demo: boolean } {
  if (path) return { config: loadConfigFile(path), demo: false };
  return { config: buildConfig(DEMO_CONFIG), demo: true };
}

/** Opens storage and applies migrations (with their event). */
export async function openMigrated(config: Config, clock: Clock): Promise<{ storage: Storage; applied: string[] }> {
  const storage = openStorage(config.storage.url);
  const applied = await storage.migrate();
  if (applied.length)
    await storage.events.append({ type: 'storage.migrated', at: clock.nowMs(), actor: 'startup', data: { applied } });
  return { storage, applied };
}

/**
 * The demo client: created once, its secret kept (0600) beside the database so every start can print the same
 * working curl. Only demo mode does this; configured clients' secrets are never stored in the clear.
 */
async function ensureDemoClient(
  storage: Storage,
  clock: Clock,
  dataDir: string,
  config: Config,
): Promise<DemoCredentials> {
  const file = resolve(dataDir, 'demo-client.json');
  const existing = await storage.clients.get(DEMO_CLIENT_ID);
  if (existing && existsSync(file)) {
    const saved = JSON.parse(readFileSync(file, 'utf8')) as { client_secret: string; user_password?: string };
    const password = await ensureDemoUser(storage, clock, config, saved.user_password);
    if (password !== saved.user_password) saveDemo(file, saved.client_secret, password);
    return { clientId: DEMO_CLIENT_ID, secret: saved.client_secret, password };
  }
  const secret = randomBytes(32).toString('base64url');
  const now = clock.nowMs();
  await storage.withTransaction(async (tx) => {
    await tx.clients.upsert({
      client_id: DEMO_CLIENT_ID,
      client_name: 'Demo client',
      secret_hash: hashClientSecret(secret),
      token_endpoint_auth_method: 'client_secret_basic',
      token_endpoint_auth_signing_alg: null,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      scope: 'demo:read demo:write',
      resources: [DEMO_RESOURCE],
      jwks: null,
      jwks_uri: null,
      disabled: false,
      post_logout_redirect_uris: [],
      require_pushed_authorization_requests: false,
      metadata: {},
      source: 'demo',
      created_at: existing?.created_at ?? now,
      updated_at: now,
    });
    await tx.events.append({
      type: existing ? 'client.updated' : 'client.created',
      at: now,
      client_id: DEMO_CLIENT_ID,
      actor: 'demo',
      data: { auth_method: 'client_secret_basic', grant_types: ['client_credentials'], scope: 'demo:read demo:write' },
    });
  });
  const password = await ensureDemoUser(storage, clock, config, undefined);
  mkdirSync(dataDir, { recursive: true });
  saveDemo(file, secret, password);
  return { clientId: DEMO_CLIENT_ID, secret, password };
}

interface DemoCredentials {
  clientId: string;
  secret: string;
  /** The demo user's password (demo mode only; kept beside the client secret). */
  password: string;
}

function saveDemo(file: string, secret: string, password: string): void {
  writeFileSync(file, JSON.stringify({ client_id: DEMO_CLIENT_ID, client_secret: secret, user_password: password }), {
    mode: 0o600,
  });
  chmodSync(file, 0o600);
}

/** The demo person: created once with a random password (stored argon2id-hashed like any user). */
async function ensureDemoUser(
  storage: Storage,
  clock: Clock,
  config: Config,
  saved: string | undefined,
): Promise<string> {
  const admin = { storage, clock, config, maxTokenLifetime: config.tokens.access_token_ttl };
  const user = await storage.users.getByUsername(DEMO_USERNAME);
  if (user && saved) return saved;
  const password = randomBytes(12).toString('base64url');
  if (user) await setPassword(admin, DEMO_USERNAME, password);
  else await addUser(admin, { username: DEMO_USERNAME, password, name: 'Demo User', email: 'demo@example.test' });
  return password;
}

export interface RunningServer {
  url: string;
  /** The gateway's URL when `gateway` is configured. */
  gatewayUrl: string | undefined;
  ctx: OAuthContext;
  close(): Promise<void>;
}

/** Wiring: config -> storage -> keys -> services -> HTTP -> listen. */
export async function startServer(config: Config, opts: { demo: boolean; log?: Logger }): Promise<RunningServer> {
  // A configuration meant for a gateway running alone must not quietly start an authorization server (with its
  // own KEK and signing keys) instead.
  if (config.gateway?.remote)
    throw new ConfigError([
      'gateway.remote: set, so this configuration is for a gateway running alone: start it with --role gateway (or remove gateway.remote)',
    ]);
  const log = opts.log ?? createLogger(config);
  const testClock = process.env.PORTCULLIS_TEST_CLOCK === '1' ? new OffsetClock() : undefined;
  if (testClock) log.warn('PORTCULLIS_TEST_CLOCK=1: the test clock route is enabled; never use this in production');
  const clock: Clock = testClock ?? systemClock;
  const kek = loadKek(config.keys.kek_file, { create: true });
  const { storage } = await openMigrated(config, clock);
  const reconciled = await reconcileConfig(storage, config, clock, configFingerprint(config));
  for (const c of reconciled.changes) log.info({ change: c }, 'configuration applied');
  const seeded = await seedTotpSecrets(storage, config, kek, clock);
  if (seeded) log.info({ users: seeded }, 'TOTP secrets seeded from the configuration');
  let demoClient: DemoCredentials | undefined;
  if (opts.demo)
    demoClient = await ensureDemoClient(
      storage,
      clock,
      dirname(resolve(config.storage.url.slice('sqlite:'.length))),
      config,
    );

  const keys = new KeyManager(storage, kek, keyPolicy(config), clock);
  await keys.init();
  for (const c of await keys.tick()) log.info({ change: c }, 'key schedule');
  const sinks = new CheckpointSinks(config.audit.checkpoint_sinks, auditOrigin(config), log);
  const sealer = config.audit.seal ? await openSealer(config, storage, kek, clock, log, sinks) : undefined;
  const exporter = openExporter(config, storage, clock, log, sealer);
  const revocations = new RevocationSet(storage.revocations);
  revocations.maxFeedLagMs = config.revocation.max_feed_lag * 1000;
  revocations.pollWhenDown = config.revocation.poll_interval > 0;
  // Set by the bus when keys, clients or users changed elsewhere; while the bus is live nothing else is polled.
  let controlDirty = true;
  const feed = openRevocationFeed(config, storage, revocations, clock, log, () => {
    controlDirty = true;
    revocations.notify(); // long-polling feed readers re-read (the keys may have changed)
  });
  // This process's own revocations (every path: endpoint, CLI, grant revocation, emergency key rotation) reach its
  // set as soon as they commit, and the Redis bus relays them.
  storage.onRevocations((recs) => {
    if (feed) feed.local(recs);
    else for (const r of recs) revocations.add(r);
  });
  await revocations.sync();
  await feed?.start(3000);
  const events = new GroupCommitter(storage, { maxWaitMs: config.storage.group_commit_ms });
  const clients = new CachedClientRegistry(storage, storage.dialect === 'sqlite' ? 60_000 : 1_000);
  const limiter = await openLimiter(config, clock, log);
  const dpopReplay = await openDpopReplay(config, clock, storage, log);
  const metrics = createMetrics({
    revocations: () => revocations.size,
    eventsWritten: () => events.written,
    auditSinkFailures: () => sinks.failures,
  });

  let marker = storage.externalChangeMarker();
  let lastControl = -1;
  let lastMarkerCheck = 0;
  let refreshing: Promise<void> | undefined;
  const reloadAll = async () => {
    await keys.reload();
    await revocations.sync();
    clients.invalidate();
  };
  const ctx: OAuthContext = {
    config,
    clock,
    storage,
    keys,
    kek,
    revocations,
    events,
    clients,
    metrics,
    limiter,
    dpopReplay,
    log,
    async refresh(opts?: { force?: boolean }) {
      // The hot path (token issuance) looks at the marker at most every 5 ms: under load the event-writer thread
      // commits constantly, and checking per request cost ~10% of the main thread. Introspection, revocation and
      // the JWKS always look (force).
      const t = Date.now();
      if (!opts?.force && t - lastMarkerCheck < 5) return;
      lastMarkerCheck = t;
      const m = storage.externalChangeMarker();
      if (m !== undefined) {
        if (m === marker) return;
        marker = m;
      } else {
        // PostgreSQL: while the bus is live it announces every change (revocations go straight into the set);
        // otherwise read the trigger-maintained counter (one indexed row).
        if (!controlDirty && (revocations.busLive || !revocations.pollWhenDown)) return;
        controlDirty = false;
        const v = await storage.controlVersion();
        if (v === lastControl) return;
        lastControl = v;
      }
      refreshing ??= reloadAll().finally(() => {
        refreshing = undefined;
      });
      await refreshing;
    },
  };

  const tickKeys = async () => {
    const changes = await keys.tick();
    for (const c of changes) log.info({ change: c }, 'key schedule');
    revocations.purge(clock.nowMs());
    return changes;
  };
  const app = await buildApp({
    ctx,
    maxTokenLifetime: () => keyPolicy(config).maxTokenLifetime,
    metrics,
    ready: async () => {
      await storage.ping();
      keys.current();
      // Revocations may be going unseen: a load balancer should send traffic elsewhere.
      return revocations.healthy(clock.nowMs());
    },
    testClock: testClock
      ? {
          clock: testClock,
          onAdvance: async () => {
            await reloadAll();
            return tickKeys();
          },
        }
      : undefined,
  });
  await app.listen({ host: config.listen.host, port: config.listen.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.listen.port;
  const url = `http://${config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host}:${port}`;

  // The gateway shares this process's context: its verification keys and revocation set are the ones the
  // authorization server keeps current, so a revocation here is enforced there at once.
  let gateway: RunningGateway | undefined;
  if (config.gateway) {
    try {
      gateway = await startGateway(ctx, config.gateway);
    } catch (e) {
      await app.close();
      throw e;
    }
    log.info({ url: gateway.url, routes: config.gateway.routes.length }, 'gateway listening');
  }

  const timers = [
    setInterval(
      () => void tickKeys().catch((err) => log.error({ err }, 'key schedule failed')),
      Math.min(60_000, Math.max(1000, (config.keys.jwks_max_age * 1000) / 4)),
    ),
    setInterval(
      () =>
        void (async () => {
          const now = clock.nowMs();
          await storage.replay.purgeExpired(now);
          // Sign-in records: keep spent codes and rotated refresh tokens a day past expiry so replays are still
          // recognised as replays (and revoke) rather than answered as unknown.
          const day = 86_400_000;
          await storage.codes.purgeExpired(now - day);
          await storage.refreshTokens.purgeExpired(now - day);
          await storage.deviceCodes.purgeExpired(now - day);
          // Sessions and stored requests are worth nothing once expired (their events are the record).
          await storage.sessions.purgeExpired(now);
          await storage.authorizationRequests.purgeExpired(now);
          await storage.revocations.purgeExpired(now);
        })().catch((err) => log.error({ err }, 'purge failed')),
      600_000,
    ),
  ];
  // The polling fallback (see revocation.poll_interval); cheap while the bus is live (refresh() returns at once).
  if (config.revocation.poll_interval > 0)
    timers.push(
      setInterval(
        () => void ctx.refresh().catch((err) => log.error({ err }, 'refresh failed')),
        config.revocation.poll_interval * 1000,
      ),
    );
  for (const t of timers) t.unref();

  await storage.events.append({
    type: 'server.started',
    at: clock.nowMs(),
    actor: 'startup',
    data: {
      issuer: config.issuer,
      url,
      gateway_url: gateway?.url ?? null,
      version: process.env.npm_package_version ?? null,
    },
  });
  log.info(
    { url, gateway_url: gateway?.url, issuer: config.issuer, storage: storage.dialect, kid: keys.current().kid },
    'listening',
  );
  if (demoClient) printDemo(config, url, demoClient);

  let closing: Promise<void> | undefined;
  return {
    url,
    gatewayUrl: gateway?.url,
    ctx,
    close() {
      closing ??= (async () => {
        for (const t of timers) clearInterval(t);
        revocations.release(); // long-polling feed readers answer now rather than hold up the close
        await gateway?.close(); // its last usage records go through the event writer closed below
        await app.close(); // stops accepting, lets in-flight requests finish
        await feed?.close();
        await events.close();
        await keys.close();
        await limiter.close();
        await dpopReplay?.close();
        await storage.events.append({ type: 'server.stopped', at: clock.nowMs(), actor: 'shutdown', data: {} });
        await sealer?.stop(); // seals everything committed, server.stopped included
        await exporter?.stop(); // one last round sends what that seal added (best effort)
        await sinks.flush(3000); // the final checkpoint reaches the webhooks if they answer
        sinks.close();
        await storage.close();
      })();
      return closing;
    },
  };
}

/** SIEM export (src/audit/export.ts): a round every audit.export_interval and right after each checkpoint. */
function openExporter(
  config: Config,
  storage: Storage,
  clock: Clock,
  log: Logger,
  sealer: Sealer | undefined,
): Exporter | undefined {
  if (config.audit.export_sinks.length === 0) return undefined;
  const exporter = new Exporter(
    storage,
    clock,
    config.audit.export_sinks,
    { productVersion: productVersion(), origin: auditOrigin(config) },
    log,
  );
  sealer?.onCheckpoint(() => exporter.kick());
  exporter.start(config.audit.export_interval * 1000);
  log.info({ sinks: config.audit.export_sinks.map((s) => `${s.name} (${s.type})`) }, 'audit export');
  return exporter;
}

/** The audit sealer (src/audit/sealer.ts): seals committed events and signs a checkpoint every interval. */
export async function openSealer(
  config: Config,
  storage: Storage,
  kek: Kek,
  clock: Clock,
  log: Logger,
  sinks: CheckpointSinks,
): Promise<Sealer> {
  const origin = auditOrigin(config);
  const key = await ensureAuditKey(storage, kek, origin, clock, 'startup');
  const sealer = new Sealer(storage, clock, origin, key, log);
  sealer.onCheckpoint((c) => sinks.publish(c));
  const first = await sealer.sealOnce();
  log.info(
    { origin, verifier_key: sealer.verifierKey, sealed: first.sealed, tree_size: first.checkpoint?.tree_size },
    'audit log sealing',
  );
  sealer.start(config.audit.checkpoint_interval * 1000);
  return sealer;
}

/**
 * The revocation bus: PostgreSQL LISTEN/NOTIFY when storage is PostgreSQL, Redis pub/sub when redis.url is set
 * (and revocation.redis). Undefined on SQLite without Redis: one machine, where the change marker is the bus.
 */
function openRevocationFeed(
  config: Config,
  storage: Storage,
  set: RevocationSet,
  clock: Clock,
  log: Logger,
  onControl: () => void,
): RevocationFeed | undefined {
  const channels: BusChannel[] = [];
  // The heartbeat notices a silently dead connection well inside the lag bound.
  const heartbeatMs = Math.max(300, Math.min(2000, (config.revocation.max_feed_lag * 1000) / 3));
  if (storage.dialect === 'postgres') channels.push(new PostgresBus(config.storage.url, { heartbeatMs }));
  if (config.redis.url && config.revocation.redis)
    channels.push(new RedisBus(config.redis.url, { prefix: config.redis.key_prefix }));
  if (channels.length === 0) return undefined;
  return new RevocationFeed({
    set,
    channels,
    clock,
    log,
    event: (e) => storage.events.append(e),
    onControl,
  });
}

/** Rate-limit counters: shared through Redis when redis.url is set (several nodes), else in this process. */
export async function openLimiter(config: Config, clock: Clock, log: Logger): Promise<Limiter> {
  if (!config.redis.url) return new MemoryLimiter(clock);
  const redis = new RedisLimiter(config.redis.url, { prefix: config.redis.key_prefix, clock, log });
  try {
    await redis.ready();
  } catch (e) {
    await redis.close();
    throw e;
  }
  log.info({ prefix: config.redis.key_prefix }, 'rate-limit counters in Redis');
  return redis;
}

/** DPoP proof jtis in Redis when redis.url is set (one SET NX per proof, shared by every node); else undefined. */
export async function openDpopReplay(
  config: Config,
  clock: Clock,
  storage: Storage,
  log: Logger,
): Promise<RedisReplayStore | undefined> {
  if (!config.redis.url) return undefined;
  const replay = new RedisReplayStore(config.redis.url, {
    prefix: config.redis.key_prefix,
    clock,
    fallback: storage.replay,
    log,
  });
  try {
    await replay.ready();
  } catch (e) {
    await replay.close();
    throw e;
  }
  return replay;
}

function printDemo(config: Config, url: string, c: DemoCredentials): void {
  // A fresh PKCE pair per start (RFC 7636): the URL carries the challenge, the curl the verifier.
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const authorize = `${config.issuer}/authorize?${new URLSearchParams({
    response_type: 'code',
    client_id: DEMO_WEB_CLIENT_ID,
    redirect_uri: DEMO_REDIRECT_URI,
    scope: 'openid profile demo:read',
    state: 'demo',
    code_challenge: challenge,
    code_challenge_method: 'S256',
  })}`;
  const lines = [
    '',
    'Portcullis demo is running (SQLite in ./data). Demo client:',
    `  client_id:     ${c.clientId}`,
    `  client_secret: ${c.secret}`,
    `  resource:      ${DEMO_RESOURCE} (scopes demo:read demo:write)`,
    'Get an access token:',
    `  curl -s -u '${c.clientId}:${c.secret}' -d grant_type=client_credentials -d scope=demo:read ${url}/token`,
    `Discovery: ${config.issuer}/.well-known/openid-configuration`,
    '',
    `Sign in as a person: open this URL in a browser, sign in as ${DEMO_USERNAME} / ${c.password}, allow,`,
    `and copy the code from the address bar (${DEMO_REDIRECT_URI}?code=...; nothing listens there):`,
    `  ${authorize}`,
    'then exchange it within 60 seconds:',
    `  curl -s -d grant_type=authorization_code -d client_id=${DEMO_WEB_CLIENT_ID} -d redirect_uri=${DEMO_REDIRECT_URI} -d code_verifier=${verifier} -d code=CODE ${url}/token`,
    '',
  ];
  process.stderr.write(`${lines.join('\n')}\n`);
}

if (import.meta.main) {
  runCli(process.argv).catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
}
