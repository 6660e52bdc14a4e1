import type { Command } from 'commander';
import { parseVerifierKey } from '../audit/note.ts';
import { archiveSegment, checkpointBefore, verifySegmentFile } from '../audit/retention.ts';
import { auditOrigin, ensureAuditKey, keyRecordVerifier, Sealer } from '../audit/sealer.ts';
import { CheckpointSinks } from '../audit/sinks.ts';
import { loadKek } from '../keys/kek.ts';
import { systemClock } from '../lib/clock.ts';
import { parseDuration } from '../lib/duration.ts';
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
  audit
    .command('archive')
    .description(
      'archive the oldest sealed events (from the last pruned point up to a checkpoint) to a signed segment file; --prune then deletes them from the database',
    )
    .addOption(configOpt())
    .requiredOption('--dir <dir>', 'directory for the segment file')
    .option('--older-than <duration>', 'up to the newest checkpoint at least this old (e.g. 90d)')
    .option('--tree-size <n>', 'up to the checkpoint with this tree size')
    .option('--prune', 'delete the archived events from the database (after the file is written and synced)')
    .action(async (o: { config?: string; dir: string; olderThan?: string; treeSize?: string; prune?: boolean }) => {
      try {
        await withStorage(o.config, async ({ config, storage }) => {
          if ((o.olderThan === undefined) === (o.treeSize === undefined))
            throw new Error('give exactly one of --older-than and --tree-size');
          let toSize: number;
          if (o.treeSize !== undefined) {
            toSize = Number(o.treeSize);
            if (!Number.isSafeInteger(toSize) || toSize <= 0) throw new Error('--tree-size: a positive integer');
          } else {
            const seconds = parseDuration(o.olderThan);
            if (seconds === undefined) throw new Error('--older-than: a duration such as 90d or 12h');
            const cp = await checkpointBefore(storage, Date.now() - seconds * 1000);
            if (!cp) throw new Error(`no checkpoint is older than ${o.olderThan}: nothing to archive`);
            toSize = cp.tree_size;
          }
          const kek = loadKek(config.keys.kek_file, { create: false });
          const origin = auditOrigin(config);
          const key = await ensureAuditKey(storage, kek, origin, systemClock, 'cli');
          const r = await archiveSegment(storage, {
            dir: o.dir,
            toSize,
            key,
            verifier: keyRecordVerifier(key.record),
            clock: systemClock,
            prune: !!o.prune,
            actor: 'cli',
          });
          process.stdout.write(
            `archived leaves ${r.from}..${r.to - 1} to ${r.file} (sha256 ${r.sha256})${r.pruned ? '; pruned from the database' : ''}\n`,
          );
        });
      } catch (e) {
        fail(e);
      }
    });
  audit
    .command('verify-segment <files...>')
    .description('verify archived segment files on their own with the audit verifier key (no database needed)')
    .addOption(configOpt().hideHelp())
    .requiredOption('--key <verifier-key>', 'the signed-note verifier key (`portcullis audit key`)')
    .action((files: string[], o: { key: string }) => {
      try {
        const key = parseVerifierKey(o.key);
        let bad = 0;
        for (const f of files) {
          const r = verifySegmentFile(f, key);
          if (r.ok) process.stdout.write(`ok   ${f}: leaves ${r.from}..${r.to - 1} (${r.entries} entries)\n`);
          else {
            bad++;
            process.stdout.write(`FAIL ${f}: ${r.problem}\n`);
          }
        }
        if (bad > 0) process.exit(1);
      } catch (e) {
        fail(e);
      }
    });
}
