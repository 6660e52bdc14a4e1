import { existsSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { starterConfig } from '../config/starter.ts';
import { unlockUser } from '../identity/account-guard.ts';
import { resetMfa } from '../identity/mfa.ts';
import { addUser, disableUser, enableUser, setPassword, type UserAdmin } from '../identity/users.ts';
import { loadKek } from '../keys/kek.ts';
import { isPublished, KeyManager } from '../keys/manager.ts';
import { systemClock } from '../lib/clock.ts';
import { type RevocationRequest, recordRevocation } from '../oauth/revocation-set.ts';
import { registerAuditCommands } from './audit.ts';
import { configOpt, fail, main, type open, withStorage } from './common.ts';

/** One line from standard input (a password is never taken from the command line, where `ps` would show it). */
async function readSecretLine(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const line = Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
  if (!line) throw new Error('no password on standard input');
  return line;
}

export async function runCli(argv: string[]): Promise<void> {
  const program = new Command('portcullis')
    .description('OAuth 2.1 / OpenID Connect authorization server and API gateway')
    .showHelpAfterError()
    .exitOverride((err) => {
      process.exit(err.exitCode);
    });

  program
    .command('start')
    .description(
      'run the authorization server, and the API gateway on its own listener when `gateway` is configured (demo on ./data when no --config is given); --role gateway runs the gateway alone against gateway.remote',
    )
    .addOption(configOpt())
    .addOption(
      new Option(
        '--role <role>',
        'all: authorization server (and gateway when configured); gateway: the gateway alone, following gateway.remote',
      )
        .choices(['all', 'gateway'])
        .default('all'),
    )
    .action(async (o: { config?: string; role: 'all' | 'gateway' }) => {
      try {
        const m = await main();
        const { config, demo } = m.loadConfig(o.config);
        const log = m.createLogger(config);
        const server =
          o.role === 'gateway'
            ? await (await import('../gateway-node.ts')).startGatewayNode(config, { log })
            : await m.startServer(config, { demo, log });
        const stop = (signal: string) => {
          log.info({ signal }, 'shutting down: draining in-flight requests');
          server
            .close()
            .then(() => {
              log.info('stopped');
              process.exit(0);
            })
            .catch((err) => {
              log.error({ err }, 'shutdown failed');
              process.exit(1);
            });
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      } catch (e) {
        fail(e);
      }
    });

  program
    .command('init')
    .description('write a commented starter configuration file and a key-encryption key file')
    .option('-o, --output <file>', 'where to write the configuration', 'portcullis.yaml')
    .option('--force', 'overwrite an existing file')
    .action((o: { output: string; force?: boolean }) => {
      try {
        const out = resolve(o.output);
        if (existsSync(out) && !o.force) throw new Error(`${out} exists; use --force to overwrite`);
        const { text, clientSecret } = starterConfig();
        writeFileSync(out, text, { mode: 0o600 });
        const kek = loadKek(resolve(out, '..', 'data/kek'), { create: true });
        process.stdout.write(
          `wrote ${out}\nkey-encryption key: ${kek.source}\nclient example-service secret: ${clientSecret}\nstart with: npm start -- --config ${o.output}\n`,
        );
      } catch (e) {
        fail(e);
      }
    });

  program
    .command('migrate')
    .description('apply pending storage migrations')
    .addOption(configOpt())
    .action(async (o: { config?: string }) => {
      try {
        const applied = await withStorage(o.config, async (s) => s.applied);
        process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'storage is up to date\n');
      } catch (e) {
        fail(e);
      }
    });

  program
    .command('backup')
    .description(
      'consistent online backup of SQLite storage to a file (PostgreSQL: use pg_dump); the KEK is not included',
    )
    .addOption(configOpt())
    .requiredOption('-o, --output <file>', 'backup file to write')
    .action(async (o: { config?: string; output: string }) => {
      try {
        const out = resolve(o.output);
        if (existsSync(out)) throw new Error(`${out} exists; choose a new file`);
        await withStorage(o.config, async ({ storage }) => storage.backup(out));
        process.stdout.write(`backup written to ${out}; back up the key-encryption key separately\n`);
      } catch (e) {
        fail(e);
      }
    });

  const keys = program.command('keys').description('signing keys');
  keys
    .command('list')
    .addOption(configOpt())
    .option('--json', 'machine-readable output')
    .action(async (o: { config?: string; json?: boolean }) => {
      try {
        await withStorage(o.config, async ({ storage }) => {
          const list = await storage.keys.list();
          const now = Date.now();
          if (o.json) {
            process.stdout.write(
              `${JSON.stringify(
                list.map(({ private_enc: _p, ...k }) => ({
                  ...k,
                  published: isPublished({ ...k, private_enc: '' }, now),
                })),
                null,
                2,
              )}\n`,
            );
            return;
          }
          const iso = (t: number | null) => (t === null ? '-' : new Date(t).toISOString());
          process.stdout.write(
            'kid                                          alg    state     published  activates                 retire_at\n',
          );
          for (const k of list)
            process.stdout.write(
              `${k.kid.padEnd(44)} ${k.alg.padEnd(6)} ${k.state.padEnd(9)} ${String(isPublished(k, now)).padEnd(10)} ${iso(k.activates_at).padEnd(25)} ${iso(k.retire_at)}\n`,
            );
        });
      } catch (e) {
        fail(e);
      }
    });
  keys
    .command('rotate')
    .description(
      'publish a new signing key (it signs after one JWKS max-age); --emergency: sign with it now and revoke the current key',
    )
    .addOption(configOpt())
    .option('--emergency', 'the new key signs at once; tokens signed by the current key are rejected from now on')
    .option('--reason <text>', 'recorded in the key.revoked event')
    .action(async (o: { config?: string; emergency?: boolean; reason?: string }) => {
      try {
        await withStorage(o.config, async ({ config, storage, m }) => {
          const kek = loadKek(config.keys.kek_file, { create: false });
          const km = new KeyManager(storage, kek, m.keyPolicy(config), systemClock);
          const r = await km.rotate({ emergency: !!o.emergency, actor: 'cli', reason: o.reason });
          if (o.emergency)
            process.stdout.write(
              `new key ${r.created.kid} signs now; revoked ${(r.revokedAll ?? []).join(', ') || 'nothing'}\n`,
            );
          else
            process.stdout.write(
              `key ${r.created.kid} is published and signs from ${new Date(r.created.activates_at).toISOString()}\n`,
            );
        });
      } catch (e) {
        fail(e);
      }
    });

  const clients = program.command('clients').description('OAuth clients');
  clients
    .command('list')
    .addOption(configOpt())
    .option('--json', 'machine-readable output')
    .action(async (o: { config?: string; json?: boolean }) => {
      try {
        await withStorage(o.config, async ({ storage }) => {
          const list = (await storage.clients.list()).map(({ secret_hash: _s, ...c }) => c);
          if (o.json) process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
          else
            for (const c of list)
              process.stdout.write(
                `${c.client_id}\t${c.token_endpoint_auth_method}\t${c.grant_types.join(',')}\t${c.scope}\t${c.disabled ? 'disabled' : 'enabled'}\t${c.source}\n`,
              );
        });
      } catch (e) {
        fail(e);
      }
    });

  program
    .command('revoke')
    .description('revoke tokens: one (--jti), all of a client (--client), all of a subject (--subject)')
    .addOption(configOpt())
    .option('--jti <jti>')
    .option('--client <client_id>')
    .option('--subject <sub>')
    .option('--reason <text>', 'recorded with the revocation', 'revoked by an administrator')
    .action(async (o: { config?: string; jti?: string; client?: string; subject?: string; reason: string }) => {
      try {
        const targets = (['jti', 'client', 'subject'] as const).filter((k) => o[k] !== undefined);
        if (targets.length !== 1) throw new Error('give exactly one of --jti, --client, --subject');
        const kind = targets[0] as RevocationRequest['kind'];
        const value = o[targets[0] as 'jti'] as string;
        await withStorage(o.config, async ({ config, storage, m }) => {
          const now = Date.now();
          const maxLife = m.keyPolicy(config).maxTokenLifetime * 1000;
          await storage.withTransaction((tx) =>
            recordRevocation(tx, { kind, value, at: now, expiresAt: now + maxLife, reason: o.reason, actor: 'cli' }),
          );
          process.stdout.write(`revoked ${kind} ${value}\n`);
        });
      } catch (e) {
        fail(e);
      }
    });

  const users = program.command('users').description('people who sign in');
  const admin = (s: Awaited<ReturnType<typeof open>>): UserAdmin => ({
    storage: s.storage,
    clock: systemClock,
    config: s.config,
    maxTokenLifetime: s.m.keyPolicy(s.config).maxTokenLifetime,
  });
  users
    .command('add <username>')
    .description('create a user; the password is read from standard input (one line) with --password-stdin')
    .addOption(configOpt())
    .option('--email <email>')
    .option('--name <name>')
    .option('--password-stdin', 'read the password from standard input')
    .action(
      async (username: string, o: { config?: string; email?: string; name?: string; passwordStdin?: boolean }) => {
        try {
          const password = o.passwordStdin ? await readSecretLine() : undefined;
          await withStorage(o.config, async (s) => {
            const u = await addUser(admin(s), { username, password, email: o.email, name: o.name });
            process.stdout.write(`created user ${u.username} (id ${u.id})${password ? '' : ' without a password'}\n`);
          });
        } catch (e) {
          fail(e);
        }
      },
    );
  users
    .command('list')
    .addOption(configOpt())
    .option('--json', 'machine-readable output')
    .action(async (o: { config?: string; json?: boolean }) => {
      try {
        await withStorage(o.config, async ({ storage }) => {
          const list = (await storage.users.list()).map(({ password_hash, ...u }) => ({
            ...u,
            has_password: password_hash !== null,
          }));
          if (o.json) process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
          else
            for (const u of list)
              process.stdout.write(
                `${u.username}\t${u.id}\t${u.email ?? '-'}\t${u.disabled ? 'disabled' : 'enabled'}\t${u.source}\n`,
              );
        });
      } catch (e) {
        fail(e);
      }
    });
  users
    .command('disable <username>')
    .description("disable a user: ends the user's sessions and revokes every grant (tokens stop working at once)")
    .addOption(configOpt())
    .action(async (username: string, o: { config?: string }) => {
      try {
        await withStorage(o.config, async (s) => {
          const r = await disableUser(admin(s), username);
          process.stdout.write(
            `disabled ${r.user.username}: ${r.sessionsEnded} session(s) ended, ${r.grantsRevoked} grant(s) revoked\n`,
          );
        });
      } catch (e) {
        fail(e);
      }
    });
  users
    .command('enable <username>')
    .addOption(configOpt())
    .action(async (username: string, o: { config?: string }) => {
      try {
        await withStorage(o.config, async (s) => {
          await enableUser(admin(s), username);
          process.stdout.write(`enabled ${username}\n`);
        });
      } catch (e) {
        fail(e);
      }
    });
  users
    .command('unlock <username>')
    .description('end a sign-in lock (or wait) after failed passwords now, and forget the failures')
    .addOption(configOpt())
    .action(async (username: string, o: { config?: string }) => {
      try {
        await withStorage(o.config, async (s) => {
          const r = await unlockUser(admin(s), username);
          process.stdout.write(
            r.failures === 0
              ? `${username} was not locked\n`
              : `unlocked ${username} (${r.failures} failed attempt(s) forgotten)\n`,
          );
        });
      } catch (e) {
        fail(e);
      }
    });
  users
    .command('set-password <username>')
    .description('set a new password, read from standard input (one line)')
    .addOption(configOpt())
    .action(async (username: string, o: { config?: string }) => {
      try {
        const password = await readSecretLine();
        await withStorage(o.config, async (s) => {
          await setPassword(admin(s), username, password);
          process.stdout.write(`password set for ${username}\n`);
        });
      } catch (e) {
        fail(e);
      }
    });

  users
    .command('reset-mfa <username>')
    .description(
      "remove every second factor of a user (TOTP, passkeys, recovery codes), clear the factor lock and end the user's sessions; writes mfa.removed",
    )
    .addOption(configOpt())
    .action(async (username: string, o: { config?: string }) => {
      try {
        await withStorage(o.config, async (s) => {
          const r = await resetMfa(admin(s), username);
          process.stdout.write(
            `reset MFA for ${username}: totp ${r.totp ? 'removed' : 'none'}, ${r.passkeys} passkey(s), ${r.recoveryCodes} recovery code(s), ${r.sessionsEnded} session(s) ended\n`,
          );
        });
      } catch (e) {
        fail(e);
      }
    });

  registerAuditCommands(program);

  await program.parseAsync(argv);
}
