import { Option } from 'commander';
import { ConfigError } from '../errors/oauth-error.ts';
import { systemClock } from '../lib/clock.ts';

/** Lazy import keeps `portcullis --help` fast and avoids an import cycle with main.ts. */
export const main = () => import('../main.ts');

export function fail(e: unknown): never {
  if (e instanceof ConfigError) {
    process.stderr.write(`portcullis: invalid configuration\n${e.problems.map((p) => `  ${p}`).join('\n')}\n`);
    process.exit(2);
  }
  process.stderr.write(`portcullis: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
}

export async function withStorage<T>(
  configPath: string | undefined,
  fn: (a: Awaited<ReturnType<typeof open>>) => Promise<T>,
): Promise<T> {
  const s = await open(configPath);
  try {
    return await fn(s);
  } finally {
    await s.storage.close();
  }
}

export async function open(configPath: string | undefined) {
  const m = await main();
  const { config } = m.loadConfig(configPath);
  const { storage, applied } = await m.openMigrated(config, systemClock);
  return { config, storage, applied, m };
}

export const configOpt = (): Option =>
  new Option('-c, --config <file>', 'configuration file (YAML or JSON); omit for the demo');
