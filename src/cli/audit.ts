import type { Command } from 'commander';
import { auditOrigin, ensureAuditKey, Sealer } from '../audit/sealer.ts';
import { CheckpointSinks } from '../audit/sinks.ts';
import { loadKek } from '../keys/kek.ts';
import { systemClock } from '../lib/clock.ts';
import { registerVerifyCommands } from './audit-verify.ts';
import { configOpt, fail, withStorage } from './common.ts';

/** `portcullis audit …`: the tamper-evident audit log (src/audit). */
export function registerAuditCommands(program: Command): void {
  const audit = program.command('audit').description('the tamper-evident audit log');
  audit
    .command('seal')
    .description(
      'seal every committed event now and sign a checkpoint (a running server does this every audit.checkpoint_interval)',
    )
    .addOption(configOpt())
    .action(async (o: { config?: string }) => {
      try {
        await withStorage(o.config, async ({ config, storage }) => {
          const kek = loadKek(config.keys.kek_file, { create: false });
          const origin = auditOrigin(config);
          const sealer = new Sealer(
            storage,
            systemClock,
            origin,
            await ensureAuditKey(storage, kek, origin, systemClock, 'cli'),
          );
          // Checkpoints signed here reach the file and webhook sinks too (stdout is this command's answer).
          const sinks = new CheckpointSinks(config.audit.checkpoint_sinks, origin, undefined, { stdout: false });
          sealer.onCheckpoint((c) => sinks.publish(c));
          const r = await sealer.sealOnce();
          await sinks.flush(5000);
          sinks.close();
          const cp = r.checkpoint ?? (await storage.audit.latestCheckpoint());
          process.stdout.write(
            `sealed ${r.sealed} event(s); tree size ${cp?.tree_size ?? 0}${r.leader ? '' : ' (another sealer holds the lock)'}\n`,
          );
        });
      } catch (e) {
        fail(e);
      }
    });
  audit
    .command('key')
    .description("print the audit log's signed-note verifier key(s), for `audit verify --key` and note tooling")
    .addOption(configOpt())
    .action(async (o: { config?: string }) => {
      try {
        await withStorage(o.config, async ({ storage }) => {
          const { verifierKey } = await import('../audit/note.ts');
          for (const k of await storage.audit.keys())
            process.stdout.write(
              `${verifierKey(k.name, Buffer.from(k.public_key, 'base64'))}${k.retired_at === null ? '' : ' (retired)'}\n`,
            );
        });
      } catch (e) {
        fail(e);
      }
    });
  registerVerifyCommands(audit);
}
