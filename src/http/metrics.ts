import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { OAuthMetrics } from '../oauth/context.ts';

export interface HttpMetrics extends OAuthMetrics {
  registry: Registry;
  observeRequest(route: string, method: string, status: number, seconds: number): void;
}

/** Prometheus metrics. Client ids become labels only once they authenticated (no attacker-chosen cardinality). */
export function createMetrics(gauges: {
  revocations: () => number;
  eventsWritten: () => number;
  auditSinkFailures?: () => Record<string, number>;
}): HttpMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'portcullis_' });
  const issued = new Counter({
    name: 'portcullis_tokens_issued_total',
    help: 'Access tokens issued, by client and grant type',
    labelNames: ['client_id', 'grant_type'],
    registers: [registry],
  });
  const failed = new Counter({
    name: 'portcullis_token_requests_failed_total',
    help: 'Token requests refused, by client (unknown before authentication), grant type and OAuth error code',
    labelNames: ['client_id', 'grant_type', 'error'],
    registers: [registry],
  });
  const gatewayChecks = new Counter({
    name: 'portcullis_gateway_token_checks_total',
    help: 'Access tokens the gateway checked that were not in its verified-token cache: outcome valid or invalid (a full check, signature included), or invalid_cached (refused from the cache of known-invalid tokens, no signature check)',
    labelNames: ['outcome'],
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'portcullis_http_request_duration_seconds',
    help: 'HTTP request latency by route, method and status',
    labelNames: ['route', 'method', 'status'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  new Gauge({
    name: 'portcullis_revocations_live',
    help: 'Revocation records held in memory',
    registers: [registry],
    collect() {
      this.set(gauges.revocations());
    },
  });
  new Gauge({
    name: 'portcullis_events_group_committed',
    help: 'Events written through group commit since start',
    registers: [registry],
    collect() {
      this.set(gauges.eventsWritten());
    },
  });
  new Counter({
    name: 'portcullis_audit_sink_failures_total',
    help: 'Failed writes or deliveries of audit checkpoints to their sinks outside the database, by sink type',
    labelNames: ['sink'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [sink, n] of Object.entries(gauges.auditSinkFailures?.() ?? {})) this.inc({ sink }, n);
    },
  });
  return {
    registry,
    tokenIssued: (c, g) => issued.inc({ client_id: c, grant_type: g }),
    tokenFailed: (c, g, e) => failed.inc({ client_id: c, grant_type: g, error: e }),
    gatewayTokenCheck: (outcome) => gatewayChecks.inc({ outcome }),
    observeRequest: (route, method, status, seconds) =>
      duration.observe({ route, method, status: String(status) }, seconds),
  };
}
