import { Command } from 'commander';
import type { ImportedBatchView, StationView } from '@rampart/shared/api';
import { globalsOf, withExamples } from '../command.js';
import { withClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { color, output, printFields, printJson, printTable, shortTime } from '../output.js';
import { seg } from './fleet-common.js';
import { intoNewFiles, readCertificate, readJson, readPublicKey } from './files.js';

/** The body of POST /api/v1/stations: what `rampart factory` installs on the station. */
type RegisteredStationBody = {
  station: StationView;
  certificate: string;
  chain: string;
  rootCertificate: string;
};

interface ManufacturerView {
  name: string;
  subject: string;
  fingerprint: string;
  notAfter: string;
  registeredAt: string;
  registeredBy: string;
  certificate: string;
}

interface BatchRow {
  id: string;
  station: string;
  manifestDigest: string;
  devices: number;
  createdAt: string;
  closedAt: string;
  importedAt: string;
  importedBy: string;
}

const short = (hex: string | null | undefined) => (hex ? `${hex.slice(0, 16)}…` : null);

function stationStatus(status: string): string {
  return status === 'active' ? color.green(status) : color.red(status);
}

/** `rampart station`: factory stations that issue birth certificates offline. */
export function stationCommand(): Command {
  const station = new Command('station').description(
    'Factory stations: register one by its key (it gets a CA certificate for birth certificates), list, revoke',
  );

  station.addCommand(
    withExamples(
      new Command('register')
        .description(
          'Register a factory station by its ECDSA P-256 public key; Rampart issues it a CA certificate (pathLen 0) for that key, under the manufacturing CA',
        )
        .argument('<name>', 'station name: lower-case letters, digits, ".", "_", "-" (e.g. line-1)')
        .requiredOption('--public-key <file>', "the station's public key, PEM (never its private key)")
        .option('--description <text>', 'where the station is, what it makes')
        .option(
          '-o, --out <file>',
          'write the registration (station CA certificate, chain, root CA) as JSON to this new file, for `rampart factory` on the station',
        )
        .addHelpText(
          'after',
          `
The station keeps its private key; only the public key leaves it. Make the key pair on the station:
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out station.key
  openssl pkey -in station.key -pubout -out station.pub.pem`,
        )
        .action(async (name: string, _o, cmd: Command) => {
          const o = globalsOf<{ publicKey: string; description?: string; out?: string }>(cmd);
          const key = readPublicKey(o.publicKey, '--public-key');
          const register = () =>
            withClient(o, (c) =>
              c.post<RegisteredStationBody>('/api/v1/stations', {
                name,
                publicKey: key.export({ type: 'spki', format: 'pem' }) as string,
                ...(o.description !== undefined ? { description: o.description } : {}),
              }),
            );
          // The file is created first: a station registered whose bundle could not be written is a chore.
          const r = o.out
            ? await intoNewFiles([{ path: o.out, mode: 0o644 }], async () => {
                const body = await register();
                return { value: body, texts: [JSON.stringify(body, null, 2) + '\n'] };
              })
            : await register();
          if (o.json) {
            printJson({ ...r, ...(o.out ? { file: o.out } : {}) });
            return;
          }
          process.stdout.write(
            `registered station ${color.bold(r.station.name)} (key ${short(r.station.keyId)}, CA certificate ${r.station.caSerial ?? '-'})\n\n` +
              r.certificate +
              '\n',
          );
          process.stdout.write(
            o.out
              ? `wrote the station CA certificate, its chain and the root CA to ${color.bold(o.out)}; install it on the station with \`rampart factory\`\n`
              : color.dim(
                  'the chain and root CA are in the --json output; next time pass --out FILE to keep them for the station\n',
                ),
          );
        }),
      [
        'rampart station register line-1 --public-key station.pub.pem --description "Plant 2, line 1" --out line-1.station.json',
        'rampart station register line-2 --public-key line-2.pub.pem --json | jq -r .certificate > line-2-ca.pem',
      ],
    ),
  );

  station.addCommand(
    withExamples(
      new Command('list').description('List factory stations').action(async (_o, cmd: Command) => {
        const o = globalsOf(cmd);
        const rows = await withClient(o, (c) => c.get<StationView[]>('/api/v1/stations'));
        output(o, rows, (r) =>
          printTable(
            r,
            [
              ['NAME', (s) => s.name],
              ['STATUS', (s) => stationStatus(s.status)],
              ['KEY ID', (s) => short(s.keyId)],
              ['CA SERIAL', (s) => s.caSerial],
              ['REGISTERED', (s) => shortTime(s.registeredAt)],
              ['BY', (s) => s.registeredBy],
              ['REVOKED', (s) => shortTime(s.revokedAt)],
              ['DESCRIPTION', (s) => s.description],
            ],
            'no stations: register one with rampart station register NAME --public-key FILE',
          ),
        );
      }),
      [
        'rampart station list',
        'rampart station list --json | jq -r \'.[] | select(.status == "active") | .name\'',
      ],
    ),
  );

  station.addCommand(
    withExamples(
      new Command('revoke')
        .description(
          'Revoke a station: its CA certificate is revoked, and its manifests and birth certificates are refused from now on',
        )
        .argument('<name>', 'station name')
        .action(async (name: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const s = await withClient(o, (c) => c.post<StationView>(`/api/v1/stations/${seg(name)}/revoke`));
          output(o, s, (x) =>
            process.stdout.write(
              `station ${color.bold(x.name)} is ${stationStatus(x.status)} (since ${x.revokedAt ?? '-'}): ` +
                `CA certificate ${x.caSerial ?? '-'} revoked; its manifests and birth certificates are refused\n`,
            ),
          );
        }),
      ['rampart station revoke line-1', 'rampart station revoke line-1 --json'],
    ),
  );
  return station;
}

/** `rampart manufacturer`: external manufacturing CAs whose birth certificates are accepted. */
export function manufacturerCommand(): Command {
  const manufacturer = new Command('manufacturer').description(
    "External manufacturing CAs (a module vendor's or contract manufacturer's): accept their birth certificates",
  );

  manufacturer.addCommand(
    withExamples(
      new Command('add')
        .description('Register an external manufacturing CA by its CA certificate')
        .argument('<name>', 'a name for it: lower-case letters, digits, ".", "_", "-"')
        .requiredOption('--certificate <file>', 'the CA certificate (PEM or DER)')
        .action(async (name: string, _o, cmd: Command) => {
          const o = globalsOf<{ certificate: string }>(cmd);
          const cert = readCertificate(o.certificate);
          const m = await withClient(o, (c) =>
            c.post<ManufacturerView>('/api/v1/manufacturers', { name, certificate: cert.toString() }),
          );
          output(o, m, (x) =>
            process.stdout.write(
              `registered manufacturing CA ${color.bold(x.name)}: ${x.subject} (sha256 ${short(x.fingerprint)}, valid until ${x.notAfter})\n` +
                color.dim(
                  `birth certificates it issues are accepted; enrollment policies name it as manufacturer:${x.name}\n`,
                ),
            ),
          );
        }),
      [
        'rampart manufacturer add acme-modules --certificate acme-idevid-ca.pem',
        'rampart manufacturer add cm-shenzhen --certificate cm-ca.der --json',
      ],
    ),
  );

  manufacturer.addCommand(
    withExamples(
      new Command('list').description('List external manufacturing CAs').action(async (_o, cmd: Command) => {
        const o = globalsOf(cmd);
        const rows = await withClient(o, (c) => c.get<ManufacturerView[]>('/api/v1/manufacturers'));
        output(o, rows, (r) =>
          printTable(
            r,
            [
              ['NAME', (m) => m.name],
              ['SUBJECT', (m) => m.subject],
              ['SHA-256', (m) => short(m.fingerprint)],
              ['NOT AFTER', (m) => shortTime(m.notAfter)],
              ['REGISTERED', (m) => shortTime(m.registeredAt)],
              ['BY', (m) => m.registeredBy],
            ],
            'no external manufacturing CAs: add one with rampart manufacturer add NAME --certificate FILE',
          ),
        );
      }),
      [
        'rampart manufacturer list',
        "rampart manufacturer list --json | jq -r '.[].certificate' > manufacturer-cas.pem",
      ],
    ),
  );

  manufacturer.addCommand(
    withExamples(
      new Command('remove')
        .description('Remove an external manufacturing CA: its birth certificates are refused from now on')
        .argument('<name>', 'its name')
        .action(async (name: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const r = await withClient(o, (c) =>
            c.delete<{ deleted: string }>(`/api/v1/manufacturers/${seg(name)}`),
          );
          output(o, r, (x) =>
            process.stdout.write(
              `removed manufacturing CA ${x.deleted}: its birth certificates are refused\n`,
            ),
          );
        }),
      ['rampart manufacturer remove acme-modules'],
    ),
  );
  return manufacturer;
}

/** `rampart batch`: signed batch manifests from the factory. */
export function batchCommand(): Command {
  const batch = new Command('batch').description(
    'Batch manifests: import what a factory station signed (device ← batch ← station ← time), list them',
  );

  batch.addCommand(
    withExamples(
      new Command('import')
        .description(
          "Import a signed batch manifest: the station's signature and every device are checked, and nothing is imported unless all pass",
        )
        .argument(
          '<file>',
          'the manifest (rampart-batch-manifest/1 JSON, as the station wrote it; - reads standard input)',
        )
        .addHelpText(
          'after',
          `
A refused manifest exits 2 with the reason (bad signature, unknown or revoked station, a birth
certificate not from that station, a device already in another batch, ...); nothing is stored.`,
        )
        .action(async (file: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const manifest = readJson(file, 'manifest');
          if (typeof manifest !== 'object' || manifest === null || Array.isArray(manifest))
            throw new CliError(`${file} is not a batch manifest: expected one JSON object`, EXIT.usage);
          const r = await withClient(o, (c) => c.post<ImportedBatchView>('/api/v1/batches', manifest));
          output(o, r, (x) => {
            process.stdout.write(
              `imported batch ${color.bold(x.batch)} from station ${color.bold(x.station)}: ` +
                `${x.devices} device${x.devices === 1 ? '' : 's'}` +
                (x.issued.length
                  ? `, ${x.issued.length} birth certificate${x.issued.length === 1 ? '' : 's'} issued now`
                  : '') +
                '\n',
            );
            printFields([
              ['created', x.createdAt],
              ['closed', x.closedAt],
              ['imported', `${x.importedAt} by ${x.importedBy}`],
              ['manifest sha256', x.manifestDigest],
            ]);
          });
        }),
      [
        'rampart batch import b-2026-11-a.manifest.json',
        'rampart batch import b-2026-11-a.manifest.json --json | jq .devices',
      ],
    ),
  );

  batch.addCommand(
    withExamples(
      new Command('list')
        .description('List imported batches, with their station and size')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf(cmd);
          const rows = await withClient(o, (c) => c.get<BatchRow[]>('/api/v1/batches'));
          output(o, rows, (r) =>
            printTable(
              r,
              [
                ['BATCH', (b) => b.id],
                ['STATION', (b) => b.station],
                ['DEVICES', (b) => b.devices],
                ['CLOSED', (b) => shortTime(b.closedAt)],
                ['IMPORTED', (b) => shortTime(b.importedAt)],
                ['BY', (b) => b.importedBy],
                ['MANIFEST SHA-256', (b) => short(b.manifestDigest)],
              ],
              'no batches imported: rampart batch import FILE',
            ),
          );
        }),
      ['rampart batch list', 'rampart batch list --json | jq -r \'.[] | "\\(.id) \\(.devices)"\''],
    ),
  );
  return batch;
}
