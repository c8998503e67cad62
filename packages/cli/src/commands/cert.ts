import { Command, Option } from 'commander';
import { writeFileSync } from 'node:fs';
import type {
  CertificateDetail,
  CertificateList,
  CertificateSummary,
  RevokeResult,
} from '@rampart/shared/api';
import { CERTIFICATE_PROFILES } from '@rampart/shared/api';
import {
  PkiFormatError,
  REVOCATION_REASON_NAMES,
  normalizeSerial,
  parseRevocationReason,
  type RevocationReason,
} from '@rampart/shared/pki';
import { globalsOf, withExamples } from '../command.js';
import { withClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { color, counter, output, printFields, printJson, printTable, shortTime } from '../output.js';
import { positiveInt } from './fleet-common.js';

/** A serial as openssl prints it (any case, optional colons) → the API's lowercase hex. */
export function serialArg(input: string): string {
  try {
    return normalizeSerial(input);
  } catch (err) {
    if (err instanceof PkiFormatError) throw new CliError(err.message, EXIT.usage);
    throw err;
  }
}

export function reasonArg(input: string): RevocationReason {
  try {
    return parseRevocationReason(input);
  } catch (err) {
    if (err instanceof PkiFormatError)
      throw new CliError(`unknown revocation reason "${input}"`, EXIT.usage, [
        `use one of ${REVOCATION_REASON_NAMES.join(', ')} (or kebab-case: key-compromise)`,
      ]);
    throw err;
  }
}

/** `--expiring-within 7d` (also h, w) or a plain number of days → days. */
export function expiringWithinDays(input: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([hdw]?)$/.exec(input.trim());
  const days = m ? Number(m[1]) * { h: 1 / 24, d: 1, w: 7, '': 1 }[m[2] as 'h' | 'd' | 'w' | ''] : NaN;
  if (!Number.isFinite(days) || days > 3650)
    throw new CliError(
      `--expiring-within must be a duration such as 7d, 12h or 2w, or a number of days (got ${JSON.stringify(input)})`,
      EXIT.usage,
    );
  return days;
}

function stateText(state: string): string {
  return state === 'valid'
    ? color.green(state)
    : state === 'revoked'
      ? color.red(state)
      : color.yellow(state);
}

function printCertificates(items: readonly CertificateSummary[]): void {
  printTable(
    items,
    [
      ['SERIAL', (c) => c.serial],
      ['DEVICE', (c) => c.deviceId ?? (c.profile === 'device' ? null : `(${c.profile})`)],
      ['STATE', (c) => stateText(c.state)],
      ['NOT AFTER', (c) => shortTime(c.notAfter)],
      ['ISSUER', (c) => c.issuerId],
      ['RENEWED FROM', (c) => c.renewedFrom],
    ],
    'no certificates match',
  );
}

function printCertificate(c: CertificateDetail): void {
  printFields([
    ['serial', color.bold(c.serial)],
    ['device', c.deviceId],
    ['profile', c.profile],
    ['subject', c.subject],
    ['issuer', c.issuerId],
    [
      'state',
      c.state === 'revoked'
        ? `${stateText(c.state)} (${c.revocationReason ?? 'unspecified'}, ${c.revokedAt ?? '-'})`
        : stateText(c.state),
    ],
    ['not before', c.notBefore],
    ['not after', c.notAfter],
    ['key', `${c.keyAlgorithm}, SHA-256 ${c.keyFingerprint}`],
    ['renewed from', c.renewedFrom],
    ['enrolled by', c.enrollmentPolicy],
    ['issued', c.createdAt],
  ]);
}

interface ListOptions {
  device?: string;
  issuer?: string;
  state?: string;
  expiringWithin?: number;
  profile?: string;
  limit?: number;
  after?: string;
  all?: boolean;
}

export function certCommand(): Command {
  const cert = new Command('cert').description(
    'Certificates Rampart issued: list, show, download chains, revoke (with their renewals)',
  );

  cert.addCommand(
    withExamples(
      new Command('list')
        .description('List certificates by device, CA, state or upcoming expiry')
        .option('--device <id>', 'only certificates of this device')
        .option('--issuer <ca>', 'only certificates of this CA, e.g. issuing-1')
        .addOption(
          new Option('--state <state>', 'only in this state').choices(['valid', 'revoked', 'expired']),
        )
        .addOption(
          new Option(
            '--expiring-within <duration>',
            'only valid certificates that expire within this time: 7d, 12h, 2w or a number of days',
          ).argParser(expiringWithinDays),
        )
        .addOption(new Option('--profile <profile>', 'only this kind').choices([...CERTIFICATE_PROFILES]))
        .addOption(
          new Option(
            '--limit <n>',
            'certificates per page (1-1000; default 100, or 1000 with --all)',
          ).argParser((v) => positiveInt(v, '--limit', 1000)),
        )
        .option('--after <serial>', 'continue after this serial (the `next` of a previous page)')
        .option('--all', 'follow the pages and return every matching certificate')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<ListOptions>(cmd);
          const limit = o.limit ?? (o.all ? 1000 : 100);
          const query = (after: string | undefined) => ({
            device: o.device,
            issuer: o.issuer,
            state: o.state,
            profile: o.profile,
            expiringWithinDays: o.expiringWithin,
            after,
            limit,
          });
          const result = await withClient(o, async (c): Promise<CertificateList> => {
            const first = await c.get<CertificateList>(
              '/api/v1/certificates',
              query(o.after ? serialArg(o.after) : undefined),
            );
            if (!o.all) return first;
            const items = [...first.items];
            const bar = counter('fetching certificates', o);
            bar.increment(first.items.length);
            let next = first.next;
            try {
              while (next) {
                const page = await c.get<CertificateList>('/api/v1/certificates', query(next));
                items.push(...page.items);
                bar.increment(page.items.length);
                next = page.next;
              }
            } finally {
              bar.stop();
            }
            return { items, next: null };
          });
          output(o, result, (r) => {
            printCertificates(r.items);
            if (r.next) process.stdout.write(color.dim(`more: add --after ${r.next} (or --all)\n`));
          });
        }),
      [
        'rampart cert list --device dw-0001',
        'rampart cert list --expiring-within 7d --all',
        'rampart cert list --issuer issuing-1 --state valid --all --json | jq -r ".items[].serial"',
      ],
    ),
  );

  cert.addCommand(
    withExamples(
      new Command('show')
        .description('Show one certificate: device, state, validity, key, lineage')
        .argument('<serial>', 'serial in hex, as openssl prints it (any case, colons allowed)')
        .option('--pem', 'print only the certificate in PEM')
        .action(async (serial: string, _o, cmd: Command) => {
          const o = globalsOf<{ pem?: boolean }>(cmd);
          const detail = await withClient(o, (c) =>
            c.get<CertificateDetail>(`/api/v1/certificates/${serialArg(serial)}`),
          );
          if (o.pem && !o.json) process.stdout.write(detail.certificatePem);
          else output(o, detail, printCertificate);
        }),
      [
        'rampart cert show 3A:9F:01:77:C2:5E:10:4B',
        'rampart cert show 3a9f0177c25e104b --pem | openssl x509 -noout -text',
      ],
    ),
  );

  cert.addCommand(
    withExamples(
      new Command('chain')
        .description('The certificate and its CA chain up to the root (PEM)')
        .argument('<serial>', 'serial in hex, as openssl prints it (any case, colons allowed)')
        .option('-o, --out <file>', 'write the chain to this file instead of standard output')
        .action(async (serial: string, _o, cmd: Command) => {
          const o = globalsOf<{ out?: string }>(cmd);
          const s = serialArg(serial);
          const pem = await withClient(o, (c) => c.get<string>(`/api/v1/certificates/${s}/chain`));
          if (o.out) {
            try {
              writeFileSync(o.out, pem, { mode: 0o644 });
            } catch (err) {
              throw new CliError(`cannot write ${o.out}: ${(err as Error).message}`, EXIT.usage);
            }
          }
          if (o.json) printJson({ serial: s, chainPem: pem, ...(o.out ? { file: o.out } : {}) });
          else if (o.out) process.stderr.write(`wrote the chain of ${s} to ${o.out}\n`);
          else process.stdout.write(pem);
        }),
      [
        'rampart cert chain 3a9f0177c25e104b --out dw-0001-chain.pem',
        'rampart cert chain 3a9f0177c25e104b > chain.pem && openssl verify -CAfile ca.pem -untrusted chain.pem chain.pem',
      ],
    ),
  );

  cert.addCommand(
    withExamples(
      new Command('revoke')
        .description(
          'Revoke a certificate and every certificate renewed from it; CRLs and OCSP answer at once',
        )
        .argument('<serial>', 'serial in hex, as openssl prints it (any case, colons allowed)')
        .addOption(
          new Option(
            '--reason <reason>',
            `RFC 5280 reason: ${REVOCATION_REASON_NAMES.join(', ')} (kebab-case works too)`,
          )
            .argParser(reasonArg)
            .makeOptionMandatory(),
        )
        .action(async (serial: string, _o, cmd: Command) => {
          const o = globalsOf<{ reason: RevocationReason }>(cmd);
          const s = serialArg(serial);
          const r = await withClient(o, (c) =>
            c.post<RevokeResult>(`/api/v1/certificates/${s}/revoke`, { reason: o.reason }),
          );
          output(o, r, (x) => {
            if (x.revoked.length === 0) {
              process.stdout.write(
                `${x.serial} was revoked already; nothing renewed from it was still valid\n`,
              );
              return;
            }
            process.stdout.write(
              `revoked ${x.revoked.length} certificate${x.revoked.length === 1 ? '' : 's'} (${x.reason})` +
                (x.alreadyRevoked ? `; ${x.serial} itself was revoked already` : '') +
                ':\n',
            );
            for (const c of x.revoked)
              process.stdout.write(`  ${c.serial}${c.deviceId ? `  device ${c.deviceId}` : ''}\n`);
          });
        }),
      [
        'rampart cert revoke 3A:9F:01:77:C2:5E:10:4B --reason key-compromise',
        'rampart cert revoke 3a9f0177c25e104b --reason cessationOfOperation --json',
      ],
    ),
  );
  return cert;
}
