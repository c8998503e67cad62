import { Command, Option } from 'commander';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import type { CaStatus, CertificateAuthority } from '@rampart/shared/api';
import { SharedError } from '@rampart/shared/errors';
import { createLogger } from '@rampart/shared/logging';
import { globalsOf, withExamples, type GlobalOptions } from '../command.js';
import { withClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { color, output, printFields, printJson, printTable, shortTime } from '../output.js';
import { loadServer } from '../server.js';
import { readPassphrase as sharedReadPassphrase } from '../passphrase.js';

const KEY_ALGORITHMS = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072'] as const;
export const PASSPHRASE_ENV = 'RAMPART_EXPORT_PASSPHRASE';

/** Path segment for a URL: never let an argument change the path. */
const seg = (s: string) => encodeURIComponent(s);

/**
 * The passphrase that protects an exported root key: `--passphrase-file FILE` (`-` for standard
 * input; its first line) or RAMPART_EXPORT_PASSPHRASE. Never a flag value: argv is visible to other users.
 */
export function readPassphrase(o: { passphraseFile?: string }, env = process.env): string {
  return sharedReadPassphrase(o, { envVar: PASSPHRASE_ENV, what: 'the root key' }, env);
}

function keyStateText(ca: CertificateAuthority): string {
  return ca.keyState === 'online' ? ca.keyState : color.yellow(ca.keyState);
}

function statusText(status: string): string {
  return status === 'active' ? color.green(status) : status === 'retiring' ? color.yellow(status) : status;
}

export function printAuthorities(rows: readonly CertificateAuthority[]): void {
  printTable(
    rows,
    [
      ['ID', (c) => c.id],
      ['KIND', (c) => c.kind],
      ['STATUS', (c) => statusText(c.status)],
      ['KEY', (c) => keyStateText(c)],
      ['ALGORITHM', (c) => c.keyAlgorithm],
      ['NOT AFTER', (c) => shortTime(c.notAfter)],
      ['VALID', (c) => (c.kind === 'root' ? null : c.certificates.valid)],
      ['REVOKED', (c) => (c.kind === 'root' ? null : c.certificates.revoked)],
      ['EXPIRED', (c) => (c.kind === 'root' ? null : c.certificates.expired)],
      ['CRL', (c) => (c.crl ? `#${c.crl.number}` : null)],
      ['CRL NEXT UPDATE', (c) => shortTime(c.crl?.nextUpdate)],
    ],
    'no certificate authority yet: rampart up creates one on first start (or rampart ca init)',
  );
}

function printStatus(s: CaStatus): void {
  printAuthorities(s.authorities);
  process.stdout.write('\n');
  const fields: [string, unknown][] = [
    ['key store', s.keyStore],
    ['device certificates', `valid ${s.deviceCertificateHours}h`],
    ['EST', s.endpoints.est],
    ['OCSP', s.endpoints.ocsp],
    ...Object.entries(s.endpoints.crl).map(([id, url]): [string, unknown] => [`CRL ${id}`, url]),
  ];
  printFields(fields);
  const root = s.authorities.find((c) => c.kind === 'root' && c.status === 'active');
  if (root?.keyState === 'online') {
    process.stdout.write(
      color.dim(
        `\nthe root key is online; in production export it and keep it offline: rampart ca root export --out root-ca.key\n`,
      ),
    );
  } else if (root) {
    process.stdout.write(
      color.dim(
        `\nthe root key is offline (exported ${root.keyExportedAt ?? '-'}); a rollover needs it back: rampart ca root import FILE\n`,
      ),
    );
  }
}

/** Create `path` for writing, refusing to overwrite: the caller removes it again if the work fails. */
function createExclusive(path: string, mode: number): number {
  try {
    return openSync(path, 'wx', mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST')
      throw new CliError(`${path} exists already; choose another file or remove it first`, EXIT.usage);
    throw new CliError(`cannot write ${path}: ${(err as Error).message}`, EXIT.usage);
  }
}

function writeOut(path: string, text: string, mode = 0o644): void {
  try {
    writeFileSync(path, text, { mode });
  } catch (err) {
    throw new CliError(`cannot write ${path}: ${(err as Error).message}`, EXIT.usage);
  }
}

function readInput(path: string, what: string): string {
  try {
    return readFileSync(path === '-' ? 0 : path, 'utf8');
  } catch (err) {
    throw new CliError(`cannot read ${what} ${path}: ${(err as Error).message}`, EXIT.usage);
  }
}

interface InitOptions {
  algorithm?: string;
  organization?: string;
}

/** `rampart ca init`: create the hierarchy offline, in a data directory no platform is using. */
async function initHierarchy(cmd: Command, o: InitOptions & GlobalOptions): Promise<void> {
  const server = await loadServer();
  let loaded;
  try {
    loaded = server.loadServerConfig({
      file: o.config,
      flags: {
        // RAMPART_DATA_DIR also fills the option; the loader reads it itself, with the right origin.
        dataDir: cmd.getOptionValueSourceWithGlobals('dataDir') === 'cli' ? o.dataDir : undefined,
        'ca.keyAlgorithm': o.algorithm,
        'ca.organization': o.organization,
      },
      flagNames: { 'ca.keyAlgorithm': '--algorithm', 'ca.organization': '--organization' },
    });
  } catch (err) {
    if (err instanceof SharedError)
      throw new CliError(err.message, EXIT.usage, ['see `rampart config settings` for every key']);
    throw err;
  }
  const { config, origins } = loaded;
  const dataDir = config.dataDir;
  const files = server.dataFiles(dataDir);
  const logger = createLogger({
    level: 'warn',
    format: !origins.has('log.format') && process.stderr.isTTY ? 'pretty' : config.log.format,
  });

  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const unlock = server.lockDataDir(dataDir);
  try {
    const storage = await server.openStorage(server.databaseUrlOf(config), {
      poolSize: 2,
      sqliteSynchronous: config.database.sqliteSynchronous,
    });
    try {
      const existing = await storage.db
        .selectFrom('certificate_authorities')
        .select('id')
        .orderBy('created_at')
        .execute();
      if (existing.length) {
        const ids = existing.map((c) => c.id).join(', ');
        throw new CliError(`a CA hierarchy exists already for ${dataDir} (${ids})`, EXIT.conflict, [
          'nothing was changed; see it with `rampart ca status` while `rampart up` runs',
          'to start over, use a new --data-dir (and database)',
        ]);
      }
      const keys = await server.openKeyStore(config, process.env, logger);
      try {
        const auditKey = await server.getOrCreateKey(keys, server.AUDIT_KEY_LABEL, 'ec-p256');
        writeFileSync(
          files.auditPublicKey,
          auditKey.publicKey.export({ type: 'spki', format: 'pem' }) as string,
          { mode: 0o644 },
        );
        const audit = new server.AuditLog(storage, auditKey);
        await audit.flush();
        const identity = new server.IdentityService(
          storage,
          keys,
          audit,
          new server.FleetRegistry(storage),
          server.identitySettingsOf(config),
          logger,
        );
        const created = await identity.open();
        writeFileSync(files.caCert, identity.rootPem(), { mode: 0o644 });
        await audit.checkpoint();
        const result = {
          dataDir,
          caCertificate: files.caCert,
          keyStore: keys.backend,
          authorities: created.map((c) => ({
            id: c.id,
            kind: c.kind,
            subject: c.subject,
            serial: c.serial,
            keyAlgorithm: c.keyAlgorithm,
            notBefore: c.notBefore,
            notAfter: c.notAfter,
          })),
        };
        output(o, result, (r) => {
          process.stdout.write(
            `created the CA hierarchy for ${r.dataDir} (keys in the ${r.keyStore} key store):\n`,
          );
          printTable(r.authorities, [
            ['ID', (c) => c.id],
            ['KIND', (c) => c.kind],
            ['SUBJECT', (c) => c.subject],
            ['ALGORITHM', (c) => c.keyAlgorithm],
            ['NOT AFTER', (c) => shortTime(c.notAfter)],
            ['SERIAL', (c) => c.serial],
          ]);
          process.stdout.write(
            `\nroot CA certificate: ${r.caCertificate} (devices and the CLI pin it)\n` +
              color.dim(`next: rampart up --data-dir ${r.dataDir}\n`),
          );
        });
      } finally {
        await keys.close?.();
      }
    } finally {
      await storage.close();
    }
  } finally {
    unlock();
  }
}

export function caCommand(): Command {
  const ca = new Command('ca').description(
    'The certificate authority: status, first setup, rollover, and keeping the root key offline',
  );

  ca.addCommand(
    withExamples(
      new Command('status')
        .description('Show every CA (status, key, validity, certificates, CRL) and the enrollment endpoints')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf(cmd);
          const status = await withClient(o, (c) => c.get<CaStatus>('/api/v1/ca'));
          output(o, status, printStatus);
        }),
      [
        'rampart ca status',
        'rampart ca status --json | jq -r \'.authorities[] | select(.status == "active") | .id\'',
      ],
    ),
  );

  ca.addCommand(
    withExamples(
      new Command('init')
        .description(
          'Create the CA hierarchy (root, issuing, manufacturing) offline, before the first `rampart up`',
        )
        .addOption(
          new Option(
            '--algorithm <algorithm>',
            'key algorithm of the CA keys (default ca.keyAlgorithm: ec-p256)',
          ).choices([...KEY_ALGORITHMS]),
        )
        .option('--organization <name>', 'organization (O) in the CA certificates (default ca.organization)')
        .addHelpText(
          'after',
          '\nRuns without a server: it locks the data directory (so not while `rampart up` uses it), opens its key\n' +
            'store and database, and writes <data-dir>/ca.pem. It refuses (exit 6) when a hierarchy exists.\n' +
            '`rampart up` creates the same hierarchy with the configured defaults on first start.\n',
        )
        .action(async (_o, cmd: Command) => initHierarchy(cmd, globalsOf<InitOptions>(cmd))),
      [
        'rampart ca init --data-dir /var/lib/rampart --algorithm ec-p384 --organization "Acme Devices"',
        'rampart ca init --json   # ./rampart-data, with the ca.* settings of the config file',
      ],
    ),
  );

  ca.addCommand(
    withExamples(
      new Command('rollover')
        .description(
          'Replace the issuing (or manufacturing) CA with a new generation signed by the root; needs the root key online',
        )
        .addOption(
          new Option('--kind <kind>', 'which CA to roll over')
            .choices(['issuing', 'manufacturing'])
            .default('issuing'),
        )
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<{ kind: string }>(cmd);
          const r = await withClient(o, (c) =>
            c.post<{ previous: CertificateAuthority; next: CertificateAuthority }>('/api/v1/ca/rollover', {
              kind: o.kind,
            }),
          );
          output(o, r, ({ previous, next }) =>
            process.stdout.write(
              `rolled over the ${next.kind} CA: ${color.bold(next.id)} (${next.subject}, until ${shortTime(next.notAfter)}) issues from now on\n` +
                `${previous.id} is retiring: still served (chain, CRL, OCSP) so its certificates keep working until they expire\n` +
                color.dim(
                  `when none are left (rampart cert list --issuer ${previous.id} --state valid): rampart ca retire ${previous.id}\n`,
                ),
            ),
          );
        }),
      ['rampart ca rollover', 'rampart ca rollover --kind manufacturing --json'],
    ),
  );

  ca.addCommand(
    withExamples(
      new Command('retire')
        .description('Stop serving a retiring CA (after a rollover, once its certificates have expired)')
        .argument('<id>', 'CA id as shown by `rampart ca status`, e.g. issuing-1')
        .action(async (id: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const r = await withClient(o, (c) => c.post<CertificateAuthority>(`/api/v1/ca/${seg(id)}/retire`));
          output(o, r, (x) =>
            process.stdout.write(
              `retired ${x.id}: no longer in cacerts, CRLs or OCSP (${x.certificates.valid} of its certificates still valid)\n`,
            ),
          );
        }),
      ['rampart ca retire issuing-1'],
    ),
  );

  ca.addCommand(
    withExamples(
      new Command('certificate')
        .description('Print or save a CA certificate (PEM)')
        .argument('<id>', 'CA id as shown by `rampart ca status`, e.g. root-1')
        .option('-o, --out <file>', 'write the PEM to this file instead of standard output')
        .action(async (id: string, _o, cmd: Command) => {
          const o = globalsOf<{ out?: string }>(cmd);
          const pem = await withClient(o, (c) => c.get<string>(`/api/v1/ca/${seg(id)}/certificate`));
          if (o.out) writeOut(o.out, pem);
          if (o.json) printJson({ id, certificatePem: pem, ...(o.out ? { file: o.out } : {}) });
          else if (o.out) process.stderr.write(`wrote the certificate of ${id} to ${o.out}\n`);
          else process.stdout.write(pem);
        }),
      [
        'rampart ca certificate root-1 --out ca.pem',
        'rampart ca certificate issuing-1 | openssl x509 -noout -text',
      ],
    ),
  );

  ca.addCommand(rootCommand());
  return ca;
}

function rootCommand(): Command {
  const root = new Command('root').description(
    'Keep the root CA key offline: export it encrypted, remove it, import it for a rollover',
  );
  const passphraseFileHelp = `file whose first line is the passphrase (- for standard input); or set ${PASSPHRASE_ENV}`;

  root.addCommand(
    withExamples(
      new Command('export')
        .description(
          'Export the root CA key, encrypted with your passphrase (PKCS#8, AES-256), to keep offline',
        )
        .requiredOption('-o, --out <file>', 'where to write the encrypted key (created with mode 0600)')
        .option('--cert-out <file>', 'where to write the root certificate (default <out>.crt)')
        .option('--passphrase-file <file>', passphraseFileHelp)
        .addHelpText(
          'after',
          `\nThe passphrase (at least 12 characters) comes from --passphrase-file or ${PASSPHRASE_ENV}, never from a flag.\n` +
            'The key stays in Rampart until `rampart ca root remove --yes`.\n',
        )
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<{ out: string; certOut?: string; passphraseFile?: string }>(cmd);
          const passphrase = readPassphrase(o);
          if (passphrase.length < 12)
            throw new CliError('the export passphrase must have at least 12 characters', EXIT.usage);
          const certOut = o.certOut ?? `${o.out}.crt`;
          const result = await withClient(o, async (c) => {
            const status = await c.get<CaStatus>('/api/v1/ca');
            const rootCa = status.authorities.find((a) => a.kind === 'root' && a.status === 'active');
            if (rootCa?.keyState === 'offline')
              throw new CliError(`the root key (${rootCa.id}) is offline already`, EXIT.conflict, [
                'the export made before removing it is the copy to keep; to use it again: rampart ca root import FILE',
              ]);
            // Claim both files first, so a finished export is never lost to a file that cannot be written.
            const keyFd = createExclusive(o.out, 0o600);
            let certFd: number;
            try {
              certFd = createExclusive(certOut, 0o644);
            } catch (err) {
              closeSync(keyFd);
              rmSync(o.out, { force: true });
              throw err;
            }
            try {
              const exported = await c.post<{ keyPem: string; certificatePem: string }>(
                '/api/v1/ca/root/export',
                { passphrase },
              );
              writeSync(keyFd, exported.keyPem);
              writeSync(certFd, exported.certificatePem);
              return { ca: rootCa?.id ?? null, keyFile: o.out, certificateFile: certOut };
            } catch (err) {
              rmSync(o.out, { force: true });
              rmSync(certOut, { force: true });
              throw err;
            } finally {
              closeSync(keyFd);
              closeSync(certFd);
            }
          });
          const passin =
            o.passphraseFile && o.passphraseFile !== '-'
              ? `file:${o.passphraseFile}`
              : o.passphraseFile
                ? 'stdin'
                : `env:${PASSPHRASE_ENV}`;
          output(o, result, (r) =>
            process.stdout.write(
              `exported the root CA key${r.ca ? ` of ${r.ca}` : ''}, encrypted with your passphrase, to ${color.bold(r.keyFile)} (mode 0600)\n` +
                `root certificate: ${r.certificateFile}\n\n` +
                'next:\n' +
                `  1. check the copy opens: openssl pkey -in ${r.keyFile} -passin ${passin} -noout\n` +
                `  2. store ${r.keyFile} offline (e.g. two encrypted USB drives in a safe), and the passphrase apart from it\n` +
                '  3. take the key out of Rampart: rampart ca root remove --yes\n' +
                color.dim(
                  `a rollover later needs it back for a moment: rampart ca root import ${r.keyFile}\n`,
                ),
            ),
          );
        }),
      [
        `${PASSPHRASE_ENV}='correct horse battery staple' rampart ca root export --out /media/usb/rampart-root.key`,
        'rampart ca root export --out root.key --cert-out root.pem --passphrase-file /dev/shm/pass',
      ],
    ),
  );

  root.addCommand(
    withExamples(
      new Command('remove')
        .description(
          'Delete the root CA key from the key store (after an export); the root CA keeps working for trust',
        )
        .option('--yes', 'confirm: the exported copy is the only one left afterwards')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<{ yes?: boolean }>(cmd);
          if (!o.yes)
            throw new CliError('refusing to remove the root CA key without --yes', EXIT.usage, [
              'afterwards the encrypted export is the only copy of the key: without it (and its passphrase) no new issuing CA can ever be made',
              'export it first (rampart ca root export --out FILE), check it opens (openssl pkey -in FILE -noout), store it offline,',
              'then run: rampart ca root remove --yes',
            ]);
          const r = await withClient(o, (c) => c.post<CertificateAuthority>('/api/v1/ca/root/remove'));
          output(o, r, (x) =>
            process.stdout.write(
              `removed the key of ${x.id} from the key store: the root key is ${color.bold(x.keyState)}\n` +
                'certificates, CRLs and OCSP keep working; a CA rollover needs it back: rampart ca root import FILE\n',
            ),
          );
        }),
      ['rampart ca root remove --yes'],
    ),
  );

  root.addCommand(
    withExamples(
      new Command('import')
        .description('Bring an exported root CA key back online (e.g. for a rollover)')
        .argument('<file>', 'the encrypted key written by `rampart ca root export` (- for standard input)')
        .option('--passphrase-file <file>', passphraseFileHelp)
        .action(async (file: string, _o, cmd: Command) => {
          const o = globalsOf<{ passphraseFile?: string }>(cmd);
          if (file === '-' && o.passphraseFile === '-')
            throw new CliError('the key and the passphrase cannot both come from standard input', EXIT.usage);
          if (file !== '-' && !existsSync(file)) throw new CliError(`${file} does not exist`, EXIT.usage);
          const passphrase = readPassphrase(o);
          const keyPem = readInput(file, 'key file');
          const r = await withClient(o, (c) =>
            c.post<CertificateAuthority>('/api/v1/ca/root/import', { keyPem, passphrase }),
          );
          output(o, r, (x) =>
            process.stdout.write(
              `the key of ${x.id} is ${color.bold(x.keyState)} again\n` +
                color.dim('after the rollover, take it offline again: rampart ca root remove --yes\n'),
            ),
          );
        }),
      [
        `${PASSPHRASE_ENV}=... rampart ca root import /media/usb/rampart-root.key && rampart ca rollover && rampart ca root remove --yes`,
      ],
    ),
  );
  return root;
}
