import type { Logger } from 'pino';
import { auditOrigin, type Sealer } from './audit/sealer.ts';
import { CheckpointSinks } from './audit/sinks.ts';
import type { Config } from './config/schema.ts';
import { ConfigError } from './errors/oauth-error.ts';
import { RemoteGatewaySource } from './gateway/remote-context.ts';
import { startGateway } from './gateway/server.ts';
import { createMetrics } from './http/metrics.ts';
import { startOpsServer } from './http/ops-server.ts';
import { type Kek, loadKek } from './keys/kek.ts';
import { type Clock, OffsetClock, systemClock } from './lib/clock.ts';
import { createLogger, openDpopReplay, openLimiter, openMigrated, openSealer } from './main.ts';
import { GroupCommitter } from './storage/group-commit.ts';
import type { Storage } from './storage/ports.ts';

export interface RunningGatewayNode {
  /** The operations listener (listen.*): /healthz, /readyz. */
  url: string;
  gatewayUrl: string;
  source: RemoteGatewaySource;
  close(): Promise<void>;
}

/**
 * `portcullis start --role gateway`: the gateway alone, following a remote authorization server (gateway.remote)
 * for its signing keys and revocations, with no network call per request. The node's own storage (storage.url:
 * SQLite by default, or PostgreSQL shared by several gateway nodes) holds only what the gateway writes: its events
 * (gateway.denied, gateway.usage, rate_limit.hit, revocation.feed_lost / _restored, server.started / _stopped) and
 * the DPoP proof ids it has seen. It opens no KEK, creates no signing key, applies no configured clients or users.
 */
export async function startGatewayNode(config: Config, opts: { log?: Logger } = {}): Promise<RunningGatewayNode> {
  const g = config.gateway;
  if (!g) throw new ConfigError(['gateway: is required with --role gateway (its listener and routes)']);
  const remote = g.remote;
  if (!remote)
    throw new ConfigError([
      'gateway.remote: is required with --role gateway (url, client_id and client_secret of the authorization server to follow)',
    ]);
  const log = opts.log ?? createLogger(config);
  const feedUrl = new URL(remote.url);
  if (feedUrl.protocol !== 'https:' && !['127.0.0.1', 'localhost', '[::1]'].includes(feedUrl.hostname))
    log.warn(
      { remote: remote.url },
      'gateway.remote.url is plain http to another host: the feed credentials and the keys travel unprotected',
    );
  const testClock = process.env.PORTCULLIS_TEST_CLOCK === '1' ? new OffsetClock() : undefined;
  if (testClock) log.warn('PORTCULLIS_TEST_CLOCK=1: the test clock route is enabled; never use this in production');
  const clock: Clock = testClock ?? systemClock;
  // The same schema as every node (one set of migrations); the gateway uses only its events and one-time values.
  const { storage } = await openMigrated(config, clock);
  const events = new GroupCommitter(storage, { maxWaitMs: config.storage.group_commit_ms });
  // The node's own events are sealed into its own audit log when it has a KEK to keep the audit key under
  // (PORTCULLIS_KEK, or an existing keys.kek_file: a gateway node never creates one). On a PostgreSQL shared with
  // authorization server nodes, their sealer seals these events too.
  const audit = await openGatewayAudit(config, storage, clock, log);
  let limiter: Awaited<ReturnType<typeof openLimiter>>;
  try {
    limiter = await openLimiter(config, clock, log);
  } catch (e) {
    await events.close();
    await storage.close();
    throw e;
  }
  let dpopReplay: Awaited<ReturnType<typeof openDpopReplay>>;
  try {
    dpopReplay = await openDpopReplay(config, clock, storage, log);
  } catch (e) {
    await limiter.close();
    await events.close();
    await storage.close();
    throw e;
  }
  const metrics = createMetrics({ revocations: () => source.feed.set.size, eventsWritten: () => events.written });
  const source = new RemoteGatewaySource({
    config,
    remote,
    clock,
    storage,
    events,
    limiter,
    log,
    metrics,
    dpopReplay,
  });
  // Start even when the server cannot be reached yet: the gateway then refuses every token and /readyz says so.
  await source.start(3000);
  if (!source.ready())
    log.warn({ remote: remote.url }, 'revocation feed not read yet: refusing every token until it is');

  const close = async (...parts: Array<{ close(): Promise<void> } | undefined>) => {
    for (const p of parts) await p?.close();
  };
  let gateway: Awaited<ReturnType<typeof startGateway>> | undefined;
  let ops: Awaited<ReturnType<typeof startOpsServer>> | undefined;
  try {
    gateway = await startGateway(source.ctx, g);
    ops = await startOpsServer({
      host: config.listen.host,
      port: config.listen.port,
      log,
      metrics,
      readiness: () => {
        const now = clock.nowMs();
        return {
          ready: source.ready(now),
          details: {
            role: 'gateway',
            revocation_feed: source.feed.healthy(now) ? 'ok' : 'down',
            synced: source.feed.synced,
            keys: source.keys.size,
          },
        };
      },
      testClock: testClock ? { clock: testClock, onAdvance: () => source.purge() } : undefined,
    });
  } catch (e) {
    await close(gateway, source, events, limiter, dpopReplay, storage);
    throw e;
  }

  const timers = [
    setInterval(() => source.purge(), 60_000),
    setInterval(
      () => void storage.replay.purgeExpired(clock.nowMs()).catch((err) => log.error({ err }, 'replay purge failed')),
      600_000,
    ),
  ];
  for (const t of timers) t.unref();

  const issuer = source.ctx.config.issuer;
  await storage.events.append({
    type: 'server.started',
    at: clock.nowMs(),
    actor: 'startup',
    data: {
      role: 'gateway',
      issuer,
      remote_url: remote.url,
      url: ops.url,
      gateway_url: gateway.url,
      version: process.env.npm_package_version ?? null,
    },
  });
  log.info(
    { role: 'gateway', url: ops.url, gateway_url: gateway.url, issuer, remote: remote.url, storage: storage.dialect },
    'listening',
  );

  let closing: Promise<void> | undefined;
  const gw = gateway;
  const opsServer = ops;
  return {
    url: ops.url,
    gatewayUrl: gateway.url,
    source,
    close() {
      closing ??= (async () => {
        for (const t of timers) clearInterval(t);
        await gw.close(); // its last usage records go through the event writer closed below
        await opsServer.close();
        await source.close();
        await events.close();
        await limiter.close();
        await dpopReplay?.close();
        await storage.events.append({
          type: 'server.stopped',
          at: clock.nowMs(),
          actor: 'shutdown',
          data: { role: 'gateway' },
        });
        await audit?.sealer.stop();
        await audit?.sinks.flush(3000);
        audit?.sinks.close();
        await storage.close();
      })();
      return closing;
    },
  };
}

async function openGatewayAudit(
  config: Config,
  storage: Storage,
  clock: Clock,
  log: Logger,
): Promise<{ sealer: Sealer; sinks: CheckpointSinks } | undefined> {
  if (!config.audit.seal) return undefined;
  let kek: Kek;
  try {
    kek = loadKek(config.keys.kek_file, { create: false });
  } catch {
    log.warn(
      'no KEK (PORTCULLIS_KEK or keys.kek_file): this gateway node does not seal its own events; seal them from an authorization server node sharing its database, or give it a KEK',
    );
    return undefined;
  }
  // Its own log (auditOrigin: another origin than the authorization server's unless audit.origin says otherwise).
  const sinks = new CheckpointSinks(config.audit.checkpoint_sinks, auditOrigin(config), log);
  const sealer = await openSealer(config, storage, kek, clock, log, sinks);
  return { sealer, sinks };
}
