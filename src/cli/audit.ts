import { open as openFile } from 'node:fs/promises';
import { type Command, Option } from 'commander';
import { type ExportFormat, productVersion, toRecord } from '../audit/export.ts';
import { parseVerifierKey } from '../audit/note.ts';
import { archiveSegment, checkpointBefore, verifySegmentFile } from '../audit/retention.ts';
import { auditOrigin, ensureAuditKey, keyRecordVerifier, Sealer } from '../audit/sealer.ts';
import { CheckpointSinks } from '../audit/sinks.ts';
import {
  buildTimeline,
  formatTimeline,
  selectorProblem,
  TIMELINE_DEFAULT_LIMIT,
  TIMELINE_MAX_LIMIT,
  TIMELINE_SELECTORS,
  type TimelineSelectorKind,
} from '../audit/timeline.ts';
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
    .command('export')
    .description('write the sealed events, in leaf order, as OCSF records or raw entries (JSON lines)')
    .addOption(configOpt())
    .addOption(
      new Option('--format <format>', 'ocsf (OCSF 1.2.0 records) or entries (for audit verify --from-export)')
        .choices(['ocsf', 'entries'])
        .default('ocsf'),
    )
    .option('--after <leaf>', 'only events after this leaf index (a reader resuming from its last leaf)')
    .option('--out <file>', 'write to this file (created 0600, replaced) instead of standard output')
    .action(async (o: { config?: string; format: ExportFormat; after?: string; out?: string }) => {
      try {
        if (o.after !== undefined && !/^(-1|\d{1,15})$/.test(o.after))
          throw new Error('--after must be a leaf index (an integer >= -1)');
        await withStorage(o.config, async ({ config, storage }) => {
          const ctx = { productVersion: productVersion(), origin: auditOrigin(config) };
          const out = o.out ? await openFile(o.out, 'w', 0o600) : undefined;
          let next = o.after === undefined ? 0 : Number(o.after) + 1;
          let n = 0;
          try {
            for (;;) {
              const rows = await storage.audit.sealed(next, 5000);
              if (rows.length === 0) break;
              const text = `${rows.map((r) => toRecord(r, o.format, ctx).json).join('\n')}\n`;
              if (out) await out.write(text);
              else if (!process.stdout.write(text)) await new Promise((r) => process.stdout.once('drain', r));
              n += rows.length;
              next = rows.at(-1)!.leaf_index! + 1;
            }
            await out?.sync();
          } finally {
            await out?.close();
          }
          if (o.out) process.stderr.write(`exported ${n} sealed event(s) to ${o.out}\n`);
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
  audit
    .command('timeline')
    .description(
      "a token's, grant's, client's, subject's or address's story in order: issued, refreshed, used, revoked, alerts",
    )
    .addOption(configOpt())
    .option('--grant <id>', 'a grant id')
    .option('--jti <jti>', "an access token's jti (its grant's events are included)")
    .option('--client <id>', 'a client id')
    .option('--subject <sub>', 'a subject (user id, or client id for client_credentials)')
    .option('--ip <address>', 'a client IP address')
    .option(
      '--limit <n>',
      `at most this many events (default ${TIMELINE_DEFAULT_LIMIT}, at most ${TIMELINE_MAX_LIMIT})`,
    )
    .option('--json', 'print JSON instead of text')
    .action(
      async (
        o: Partial<Record<TimelineSelectorKind, string>> & { config?: string; limit?: string; json?: boolean },
      ) => {
        try {
          const given = TIMELINE_SELECTORS.filter((k) => o[k] !== undefined);
          if (given.length !== 1)
            throw new Error(`give exactly one of ${TIMELINE_SELECTORS.map((k) => `--${k}`).join(', ')}`);
          const by = given[0]!;
          const problem = selectorProblem(by, o[by]);
          if (problem) throw new Error(problem);
          let limit = TIMELINE_DEFAULT_LIMIT;
          if (o.limit !== undefined) {
            limit = Number(o.limit);
            if (!Number.isInteger(limit) || limit < 1 || limit > TIMELINE_MAX_LIMIT)
              throw new Error(`--limit must be an integer from 1 to ${TIMELINE_MAX_LIMIT}`);
          }
          await withStorage(o.config, async ({ storage }) => {
            const t = await buildTimeline(storage.auditExport, { by, value: o[by]! }, limit);
            process.stdout.write(o.json ? `${JSON.stringify(t, null, 2)}\n` : formatTimeline(t));
          });
        } catch (e) {
          fail(e);
        }
      },
    );
}
