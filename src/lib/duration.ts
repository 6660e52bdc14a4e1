const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/**
 * Parses a duration: a number of seconds, or a string such as "90s", "10m", "12h", "30d".
 * Returns seconds, or undefined when the text is not a duration.
 */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.floor(value) : undefined;
  if (typeof value !== 'string') return undefined;
  const m = /^\s*(\d+)\s*([smhdw]?)\s*$/.exec(value);
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = UNITS[m[2] || 's'] ?? 1;
  return n * unit;
}

export function formatDuration(seconds: number): string {
  for (const [u, n] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
  ] as const) {
    if (seconds >= n && seconds % n === 0) return `${seconds / n}${u}`;
  }
  return `${seconds}s`;
}
