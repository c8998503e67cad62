import { existsSync } from 'node:fs';
import { Command, Option } from 'commander';
import { globalsOf, withExamples } from '../command.js';
import { CliError, EXIT } from '../errors.js';
import { listBatches, checkBatchName, closeBatch, type BatchRecord } from '../factory/batches.js';
import {
  installBirth,
  openDevice,
  provisionDevice,
  type BirthIssuer,
  type DeviceHandle,
  type ProvisionedDevice,
} from '../factory/device.js';
import { createFile, withStationLock } from '../factory/files.js';
import {
  PASSPHRASE_ENV,
  initStation,
  installCa,
  loadStation,
  openStationKey,
  readStationPassphrase,
  requireStationCa,
} from '../factory/station.js';
import { color, output, printFields, printTable, shortTime } from '../output.js';
import { loadServer } from '../server.js';
import { readJson } from './files.js';

interface StationFlags {
  stationDir: string;
  passphraseFile?: string;
}

const short = (hex: string) => `${hex.slice(0, 16)}…`;

function stationDirOption(): Option {
  return new Option('--station-dir <dir>', 'the station directory (rampart factory init creates it)')
    .env('RAMPART_STATION_DIR')
    .makeOptionMandatory();
}

const passphraseOption = () =>
  new Option(
    '--passphrase-file <file>',
    `file whose first line is the station passphrase (- for standard input); or set ${PASSPHRASE_ENV}`,
  );

/** Run `fn` with the device's trust anchor, and let the anchor close what it holds open (PKCS#11). */
async function withDevice<T>(
  o: { deviceDir: string; agentConfig?: string },
  fn: (device: DeviceHandle) => Promise<T>,
): Promise<T> {
  const device = openDevice(o.deviceDir, o.agentConfig);
  try {
    return await fn(device);
  } finally {
    await device.anchor.close?.();
  }
}

const issueWithServer: BirthIssuer = async (o) => (await loadServer()).issueBirthCertificate(o);

function printProvisioned(
  d: ProvisionedDevice,
  o: { stationDir: string; deviceDir: string; agentConfig?: string },
): void {
  process.stdout.write(
    `provisioned ${color.bold(d.deviceId)} into batch ${color.bold(d.batch)} of station ${d.station} ` +
      `(${d.devicesInBatch} device${d.devicesInBatch === 1 ? '' : 's'} in the batch)\n`,
  );
  printFields(
    [
      ['serial', d.serial],
      ['model', d.hardwareRevision ? `${d.model} (revision ${d.hardwareRevision})` : d.model],
      [
        'trust anchor',
        `${d.strength === 'hardware' ? `${d.trustAnchor} (hardware)` : d.strength}; key ${short(d.keyFingerprint)} ${d.keyCreated ? 'created inside it' : 'was in it already'}`,
      ],
      ...(d.tpm ? ([['TPM', `EK ${short(d.tpm.ek)}, AK ${short(d.tpm.ak)}`]] as [string, unknown][]) : []),
      [
        'birth certificate',
        d.birthCertificate
          ? `serial ${d.birthCertificate.serial}, until ${d.birthCertificate.notAfter.slice(0, 10)}, from ${d.birthCertificate.issuer}`
          : 'requested: the platform issues it when the batch is imported',
      ],
      ['birth identity', d.birthIdentity ?? 'not yet (it needs the birth certificate)'],
    ],
    19,
  );
  process.stdout.write(
    color.dim(
      d.csr
        ? `\nafter the import (rampart batch import MANIFEST --json > imported.json), on this station:\n` +
            `  rampart factory install-birth --station-dir ${o.stationDir} --device-dir ${o.deviceDir}` +
            `${o.agentConfig ? ` --agent-config ${o.agentConfig}` : ''} imported.json\n`
        : `\nwhen the batch is complete: rampart factory close-batch --station-dir ${o.stationDir} --batch ${d.batch} --out ${d.batch}.manifest.json\n`,
    ),
  );
}

function batchState(b: BatchRecord): string {
  return b.closedAt ? 'closed' : 'open';
}

export function factoryCommand(): Command {
  const factory = new Command('factory').description(
    'The offline factory station: its key and CA, device provisioning (key in the trust anchor, birth certificate), signed batch manifests',
  );
  factory.addHelpText(
    'after',
    `
Runs offline: no command of \`rampart factory\` contacts the platform. The station's key never leaves
the station directory, encrypted with the station passphrase (${PASSPHRASE_ENV} or --passphrase-file).
Only the public key and the closed batches' manifests are carried to the platform.
`,
  );

  factory.addCommand(
    withExamples(
      new Command('init')
        .description('Create the station: its ECDSA P-256 key (encrypted at rest) and public key')
        .addOption(stationDirOption())
        .requiredOption('--name <name>', 'the station name, as it will be registered (e.g. line-1)')
        .addOption(passphraseOption())
        .addHelpText(
          'after',
          `\nThe passphrase (at least 12 characters) comes from --passphrase-file or ${PASSPHRASE_ENV}, never\n` +
            'from a flag; every command that signs asks for it again. Exit 6 when the directory holds a station.\n',
        )
        .action((_o, cmd: Command) => {
          const o = globalsOf<StationFlags & { name: string }>(cmd);
          const passphrase = readStationPassphrase(o);
          const { station, files } = initStation(o.stationDir, o.name, passphrase);
          const next = [
            `rampart station register ${station.record.name} --public-key ${files.publicKey} --out station-ca.json`,
            `rampart factory install-ca --station-dir ${station.paths.dir} station-ca.json`,
          ];
          output(
            o,
            {
              station: station.record.name,
              keyId: station.record.keyId,
              stationDir: station.paths.dir,
              files,
              next,
            },
            (r) => {
              process.stdout.write(`created station ${color.bold(r.station)} in ${r.stationDir}\n`);
              printFields([
                ['key', `${r.files.key} (ECDSA P-256, encrypted with the passphrase, mode 0600)`],
                ['public key', `${r.files.publicKey} (key id ${short(r.keyId)})`],
              ]);
              process.stdout.write(
                `\nnext, where the platform is reachable (only the public key goes there):\n  ${next[0]}\n` +
                  `then, on this station:\n  ${next[1]}\n`,
              );
            },
          );
        }),
      [
        `${PASSPHRASE_ENV}='correct horse battery staple' rampart factory init --station-dir /srv/station --name line-1`,
        'rampart factory init --station-dir ./station --name line-2 --passphrase-file /dev/shm/pass --json',
      ],
    ),
  );

  factory.addCommand(
    withExamples(
      new Command('install-ca')
        .description(
          "Install the station's CA certificate: the file `rampart station register --out` wrote (checked to be for this station's key)",
        )
        .addOption(stationDirOption())
        .argument(
          '<file>',
          'the registration JSON (station, certificate, chain, rootCertificate); - reads standard input',
        )
        .option(
          '--replace',
          'replace a CA certificate installed before (after registering the station again)',
        )
        .addHelpText(
          'after',
          '\nRefused (exit 2) when the certificate is for another key, is not a CA certificate, or does not chain\n' +
            "to the root; nothing is changed then. The root CA in the file is what the station's devices pin.\n",
        )
        .action((file: string, _o, cmd: Command) => {
          const o = globalsOf<StationFlags & { replace?: boolean }>(cmd);
          const station = loadStation(o.stationDir);
          const bundle = readJson(file, 'station registration');
          const r = installCa(station, bundle, file, { replace: o.replace });
          output(o, { station: station.record.name, ...r }, (x) => {
            process.stdout.write(
              x.unchanged
                ? `station ${color.bold(x.station)} has this CA certificate installed already\n`
                : `installed the CA certificate of station ${color.bold(x.station)}\n`,
            );
            printFields([
              ['subject', x.ca.subject],
              ['issuer', x.ca.issuer],
              ['serial', x.ca.serial],
              ['valid until', x.ca.notAfter],
            ]);
            process.stdout.write(
              color.dim(
                `\nnext: rampart factory provision --station-dir ${station.paths.dir} --batch B --device-dir DIR --id ID --serial S --model M\n`,
              ),
            );
          });
        }),
      [
        'rampart factory install-ca --station-dir /srv/station station-ca.json',
        'rampart factory install-ca --station-dir /srv/station station-ca.json --replace --json',
      ],
    ),
  );

  factory.addCommand(
    withExamples(
      new Command('provision')
        .description(
          'Provision a device: key created in its trust anchor, birth certificate from the station CA, birth identity written, device added to the batch',
        )
        .addOption(stationDirOption())
        .requiredOption('--batch <batch>', 'the batch to add the device to (opened by its first device)')
        .requiredOption('--device-dir <dir>', "the device agent's data directory (as the agent's --data-dir)")
        .requiredOption('--id <id>', 'the device id (CN and SAN of its certificates)')
        .requiredOption('--serial <serial>', "the device's serial number")
        .requiredOption('--model <model>', 'the device model id')
        .option('--hardware-revision <rev>', 'the hardware revision')
        .option(
          '--agent-config <file>',
          "the device agent's config file (YAML or JSON; trustAnchor, tpm.*, pkcs11.*); or RAMPART_AGENT_CONFIG",
        )
        .option(
          '--csr-only',
          'record a certificate request instead of issuing the birth certificate: the platform issues it at import',
        )
        .addOption(passphraseOption())
        .addHelpText(
          'after',
          `
The trust anchor is opened as the device's agent opens it: its config file and RAMPART_AGENT_*
variables, with --device-dir as the data directory. The key is created inside the anchor and never
leaves it; for a TPM the endorsement key is read and the attestation key created too. The birth
identity (identity/birth/ in --device-dir) holds the birth certificate, the station CA and the root
CA the device pins.

Refused with exit 6, nothing changed: a closed batch, a device id or serial recorded already, a trust
anchor (key or TPM) provisioned before, a device dir with a birth identity.
`,
        )
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<
            StationFlags & {
              batch: string;
              deviceDir: string;
              id: string;
              serial: string;
              model: string;
              hardwareRevision?: string;
              agentConfig?: string;
              csrOnly?: boolean;
            }
          >(cmd);
          const station = loadStation(o.stationDir);
          const ca = requireStationCa(station);
          const batch = checkBatchName(o.batch);
          const stationKey = o.csrOnly ? null : openStationKey(station, readStationPassphrase(o));
          const d = await withDevice(o, (device) =>
            provisionDevice({
              station,
              ca,
              batch,
              spec: {
                deviceId: o.id,
                serial: o.serial,
                model: o.model,
                hardwareRevision: o.hardwareRevision ?? null,
              },
              device,
              csrOnly: !!o.csrOnly,
              stationKey,
              issue: issueWithServer,
            }),
          );
          output(o, d, (x) => printProvisioned(x, { ...o, stationDir: station.paths.dir }));
        }),
      [
        'rampart factory provision --station-dir /srv/station --batch 2026-11-a --device-dir /mnt/dut/var/lib/rampart-agent --id dw-0001 --serial SN-000123 --model DW100 --hardware-revision B',
        'RAMPART_AGENT_TRUST_ANCHOR=tpm RAMPART_AGENT_TPM_TCTI=device:/dev/tpmrm0 rampart factory provision --station-dir /srv/station --batch 2026-11-a --device-dir /var/lib/rampart-agent --id dw-0002 --serial SN-000124 --model DW100 --json',
        'rampart factory provision --station-dir /srv/station --batch 2026-11-b --device-dir ./dut --agent-config ./dut/agent.yaml --id gw-7 --serial GW7 --model GW200 --csr-only',
      ],
    ),
  );

  factory.addCommand(
    withExamples(
      new Command('install-birth')
        .description(
          'For a device provisioned with --csr-only: install the birth certificate the platform issued at import',
        )
        .addOption(stationDirOption())
        .argument(
          '<file>',
          'what `rampart batch import MANIFEST --json` printed (its issued list); - reads standard input',
        )
        .requiredOption('--device-dir <dir>', "the device agent's data directory")
        .option('--agent-config <file>', "the device agent's config file; or RAMPART_AGENT_CONFIG")
        .addHelpText(
          'after',
          '\nThe device is found by the key in its trust anchor; the certificate must be for that key and issued\n' +
            "by the manufacturing CA in the station's chain.\n",
        )
        .action(async (file: string, _o, cmd: Command) => {
          const o = globalsOf<StationFlags & { deviceDir: string; agentConfig?: string }>(cmd);
          const station = loadStation(o.stationDir);
          const ca = requireStationCa(station);
          const imported = readJson(file, 'import result');
          const r = await withDevice(o, (device) => installBirth({ station, ca, imported, file, device }));
          output(o, r, (x) => {
            process.stdout.write(
              x.unchanged
                ? `device ${color.bold(x.deviceId)} has this birth certificate installed already\n`
                : `installed the birth certificate of ${color.bold(x.deviceId)} (batch ${x.batch})\n`,
            );
            printFields([
              ['serial', x.serial],
              ['issuer', x.issuer],
              ['valid until', x.notAfter],
              ['birth identity', x.birthIdentity],
            ]);
          });
        }),
      [
        'rampart batch import 2026-11-b.manifest.json --json > imported.json   # online',
        'rampart factory install-birth --station-dir /srv/station --device-dir ./dut --agent-config ./dut/agent.yaml imported.json',
      ],
    ),
  );

  factory.addCommand(
    withExamples(
      new Command('close-batch')
        .description('Close a batch: write its manifest, signed by the station key; it takes no more devices')
        .addOption(stationDirOption())
        .requiredOption('--batch <batch>', 'the batch to close')
        .option('-o, --out <file>', 'also write the manifest to this new file (to carry to the platform)')
        .addOption(passphraseOption())
        .addHelpText(
          'after',
          '\nThe manifest (rampart-batch-manifest/1) is kept as batches/<batch>.manifest.json in the station\n' +
            'directory. Import it on the platform with `rampart batch import FILE`.\n',
        )
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<StationFlags & { batch: string; out?: string }>(cmd);
          const station = loadStation(o.stationDir);
          const batch = checkBatchName(o.batch);
          if (o.out && existsSync(o.out))
            throw new CliError(`${o.out} exists already; choose another file or remove it first`, EXIT.usage);
          const key = openStationKey(station, readStationPassphrase(o));
          const closed = await withStationLock(station.paths.dir, () => closeBatch(station, batch, key));
          const text = JSON.stringify(closed.manifest, null, 2) + '\n';
          if (o.out) createFile(o.out, text, 0o644);
          const result = {
            batch,
            station: station.record.name,
            devices: closed.record.devices.length,
            createdAt: closed.record.createdAt,
            closedAt: closed.record.closedAt,
            manifest: closed.file,
            ...(o.out ? { out: o.out } : {}),
            keyId: closed.manifest.signature.keyId,
          };
          output(o, result, (r) => {
            process.stdout.write(
              `closed batch ${color.bold(r.batch)} of station ${r.station}: ${r.devices} device${r.devices === 1 ? '' : 's'}, ` +
                `manifest signed by the station key (${short(r.keyId)})\n`,
            );
            printFields([
              ['manifest', r.manifest],
              ...(r.out ? ([['copy', r.out]] as [string, unknown][]) : []),
            ]);
            process.stdout.write(
              color.dim(`\nnext, on the platform: rampart batch import ${r.out ?? r.manifest}\n`),
            );
          });
        }),
      [
        'rampart factory close-batch --station-dir /srv/station --batch 2026-11-a --out /media/usb/2026-11-a.manifest.json',
        `${PASSPHRASE_ENV}=... rampart factory close-batch --station-dir /srv/station --batch 2026-11-a --json | jq -r .manifest`,
      ],
    ),
  );

  factory.addCommand(
    withExamples(
      new Command('status')
        .description(
          'Show the station: its key, its CA certificate, and its batches (open or closed, device counts)',
        )
        .addOption(stationDirOption())
        .action((_o, cmd: Command) => {
          const o = globalsOf<StationFlags>(cmd);
          const station = loadStation(o.stationDir);
          const batches = listBatches(station).map((b) => ({
            batch: b.batch,
            state: batchState(b),
            devices: b.devices.length,
            awaitingBirthCertificate: b.devices.filter((d) => d.csr !== undefined).length,
            createdAt: b.createdAt,
            closedAt: b.closedAt,
            manifest: b.manifest,
          }));
          const result = {
            station: {
              name: station.record.name,
              keyId: station.record.keyId,
              dir: station.paths.dir,
              publicKey: station.paths.publicKey,
              createdAt: station.record.createdAt,
              ca: station.record.ca,
            },
            batches,
          };
          output(o, result, (r) => {
            process.stdout.write(`station ${color.bold(r.station.name)} in ${r.station.dir}\n`);
            printFields([
              ['key id', r.station.keyId],
              [
                'CA certificate',
                r.station.ca
                  ? `serial ${r.station.ca.serial}, until ${r.station.ca.notAfter.slice(0, 10)} (${r.station.ca.subject})`
                  : color.yellow('not installed'),
              ],
            ]);
            process.stdout.write('\n');
            printTable(
              r.batches,
              [
                ['BATCH', (b) => b.batch],
                ['STATE', (b) => (b.state === 'open' ? color.green(b.state) : b.state)],
                ['DEVICES', (b) => b.devices],
                ['CSR ONLY', (b) => b.awaitingBirthCertificate || null],
                ['CREATED', (b) => shortTime(b.createdAt)],
                ['CLOSED', (b) => shortTime(b.closedAt)],
                ['MANIFEST', (b) => b.manifest],
              ],
              r.station.ca
                ? 'no batches yet: rampart factory provision --batch NAME ... opens one'
                : `no CA certificate yet: rampart station register ${r.station.name} --public-key ${r.station.publicKey} --out station-ca.json`,
            );
          });
        }),
      [
        'rampart factory status --station-dir /srv/station',
        'rampart factory status --station-dir /srv/station --json | jq \'.batches[] | select(.state == "open")\'',
      ],
    ),
  );

  return factory;
}
