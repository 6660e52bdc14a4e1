/** Reading Prometheus samples from /metrics in the black-box suites. */
import type { RunningServer } from './server.ts';

/** Sums the samples of `name` whose labels include every given label. */
export function sample(text: string, name: string, labels: Record<string, string>): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const got: Record<string, string> = {};
    for (const lm of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) got[lm[1]!] = lm[2]!;
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) total += Number(m[3]);
  }
  return total;
}

/** The current value of `name` (summed over samples with the given labels) on a running server. */
export async function metricValue(
  server: RunningServer,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const res = await fetch(`${server.url}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return sample(await res.text(), name, labels);
}
