import { Command } from 'commander';
import type { AttestationResultView, CertificateList, Device, DeviceTrace } from '@rampart/shared/api';
import type { AttestationStatus, ProvisioningTranscript } from '@rampart/shared/provisioning';
import { globalsOf, withExamples } from '../command.js';
import { withClient, type ApiClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { color, output, printFields, printJson, printTable, shortTime } from '../output.js';
import { seg, statusColor } from './fleet-common.js';
import { mustNotExist, writeNewFiles } from './files.js';

export function attestationStatusText(status: AttestationStatus | string): string {
  return status === 'affirming'
    ? color.green(status)
    : status === 'warning'
      ? color.yellow(status)
      : color.red(status);
}

/** The trust anchor, with software keys labelled for what they are. */
export function anchorText(anchor: string, strength: 'hardware' | 'software'): string {
  return strength === 'software' ? `${anchor} ${color.yellow('(weaker: key not held in hardware)')}` : anchor;
}

function decisionText(decision: string): string {
  return decision === 'issued' ? color.green(decision) : color.red(decision);
}

function printTrace(t: DeviceTrace): void {
  const out = process.stdout;
  const m = t.manufacture;
  out.write(
    `${color.bold(t.deviceId)}` +
      (m
        ? ` ← batch ${color.bold(m.batch.id)} ← station ${color.bold(m.station.name)} ← ${m.provisionedAt}`
        : '') +
      '\n\n',
  );
  printFields(
    [
      [
        'registry',
        t.registered
          ? statusColor(t.status ?? '-')
          : color.dim('not registered yet (registered on its first enrollment)'),
      ],
      ...(m
        ? ([
            ['serial', m.serial],
            ['model', m.hardwareRevision ? `${m.model} (${m.hardwareRevision})` : m.model],
            [
              'trust anchor',
              m.trustAnchor === 'software'
                ? anchorText(m.trustAnchor, 'software')
                : `${m.trustAnchor}${m.tpm ? ' (AK recorded at the factory)' : ''}`,
            ],
            ['key sha256', m.keyFingerprint],
            ['made', m.provisionedAt],
            [
              'birth cert',
              `serial ${m.birthCertificate.serial ?? '-'}, issuer ${m.birthCertificate.issuer || '-'}, valid until ${m.birthCertificate.notAfter || '-'}`,
            ],
            [
              'batch',
              `${m.batch.id} (closed ${m.batch.closedAt}, imported ${m.batch.importedAt} by ${m.batch.importedBy})`,
            ],
            ['manifest sha256', m.batch.manifestDigest],
            ['station', `${m.station.name} (${m.station.status}, key ${m.station.keyId.slice(0, 16)}…)`],
          ] as [string, unknown][])
        : ([['made', color.dim('not in any imported manifest')]] as [string, unknown][])),
    ],
    16,
  );
  out.write('\nenrollments:\n');
  printTable(
    t.enrollments,
    [
      ['TIME', (e) => shortTime(e.time)],
      ['DECISION', (e) => decisionText(e.decision)],
      ['POLICY', (e) => e.policy],
      ['CERTIFICATE', (e) => e.certificateSerial],
      ['ATTESTATION', (e) => e.attestation?.replace(/^\w+/, (status) => attestationStatusText(status))],
      ['TRANSCRIPT', (e) => e.transcript],
    ],
    '  none yet',
  );
}

function printResults(results: readonly AttestationResultView[]): void {
  const out = process.stdout;
  const [latest, ...earlier] = results;
  if (!latest) return;
  out.write(`latest attestation of ${color.bold(latest.deviceId)}:\n`);
  printFields(
    [
      ['status', attestationStatusText(latest.status)],
      ['time', latest.createdAt],
      ['anchor', anchorText(latest.anchor, latest.anchorStrength)],
      ['key sha256', latest.keyFingerprint],
      ['evidence sha256', latest.evidenceDigest],
      ['used', latest.used ? 'yes: an enrollment consumed it' : 'no'],
      ['result', latest.id],
    ],
    16,
  );
  if (latest.reasons.length) {
    out.write('\nreasons:\n');
    for (const r of latest.reasons) out.write(`  - ${r}\n`);
  }
  out.write('\nmeasurements:\n');
  printTable(
    latest.measurements,
    [
      ['SEQ', (x) => x.seq],
      ['COMPONENT', (x) => x.component],
      [
        'VERDICT',
        (x) =>
          x.verdict === 'known'
            ? color.green(x.verdict)
            : x.verdict === 'unknown'
              ? color.red(x.verdict)
              : color.yellow(x.verdict),
      ],
      ['SHA-256', (x) => x.digest],
      ['DESCRIPTION', (x) => x.description],
    ],
    '  none in the event log',
  );
  if (!earlier.length) return;
  out.write('\nearlier:\n');
  printTable(earlier, [
    ['TIME', (r) => shortTime(r.createdAt)],
    ['STATUS', (r) => attestationStatusText(r.status)],
    ['ANCHOR', (r) => anchorText(r.anchor, r.anchorStrength)],
    ['USED', (r) => (r.used ? 'yes' : 'no')],
    ['REASONS', (r) => r.reasons.join('; ')],
  ]);
}

async function validCertificates(c: ApiClient, id: string): Promise<string[]> {
  const serials: string[] = [];
  let after: string | undefined;
  do {
    const page = await c.get<CertificateList>('/api/v1/certificates', {
      device: id,
      state: 'valid',
      limit: 1000,
      after,
    });
    serials.push(...page.items.map((x) => x.serial));
    after = page.next ?? undefined;
  } while (after);
  return serials;
}

/** Provisioning verbs of `rampart device`: trace, attestation, transcript, decommission, reprovision. */
export function deviceProvisioningCommands(): Command[] {
  const trace = withExamples(
    new Command('trace')
      .description(
        'Where a device was made and how it was provisioned: device ← batch ← station ← time, then every enrollment',
      )
      .argument('<id>', 'device id')
      .action(async (id: string, _o, cmd: Command) => {
        const o = globalsOf(cmd);
        const t = await withClient(o, (c) => c.get<DeviceTrace>(`/api/v1/devices/${seg(id)}/trace`));
        output(o, t, printTrace);
      }),
    ['rampart device trace gw-0001', 'rampart device trace gw-0001 --json | jq .manufacture.station'],
  );

  const attestation = withExamples(
    new Command('attestation')
      .description(
        "A device's attestation results, newest first: status, reasons, trust anchor, measurements",
      )
      .argument('<id>', 'device id')
      .action(async (id: string, _o, cmd: Command) => {
        const o = globalsOf(cmd);
        // A device the platform never heard of is a 404 (exit 5), not an empty history.
        const results = await withClient(o, (c) =>
          c.get<AttestationResultView[]>(`/api/v1/devices/${seg(id)}/attestation`),
        );
        output(o, results, (r) => {
          if (!r.length)
            process.stdout.write(
              color.dim(`device ${id} has not been attested yet (rampart-agent provision attests it)\n`),
            );
          else printResults(r);
        });
      }),
    ['rampart device attestation gw-0001', "rampart device attestation gw-0001 --json | jq -r '.[0].status'"],
  );

  const transcript = withExamples(
    new Command('transcript')
      .description(
        "Export a device's signed provisioning transcript (the latest, or --all) as JSON exactly as signed, to verify offline",
      )
      .argument('<id>', 'device id')
      .option('--all', 'every transcript of the device, newest first, as a JSON array')
      .option('-o, --out <file>', 'write it to this new file instead of standard output')
      .addHelpText(
        'after',
        `
The output is the transcript itself (with or without --json); check it anywhere with
  rampart transcript verify FILE --key transcript-signing.pub.pem`,
      )
      .action(async (id: string, _o, cmd: Command) => {
        const o = globalsOf<{ all?: boolean; out?: string }>(cmd);
        if (o.out) mustNotExist(o.out);
        const all = await withClient(o, (c) =>
          c.get<ProvisioningTranscript[]>(`/api/v1/devices/${seg(id)}/transcripts`),
        );
        if (!all.length)
          throw new CliError(
            `device ${id} has no provisioning transcripts: it has not enrolled yet`,
            EXIT.notFound,
          );
        const doc: unknown = o.all ? all : all[0];
        const text = JSON.stringify(doc, null, 2) + '\n';
        if (!o.out) {
          process.stdout.write(text);
          return;
        }
        await writeNewFiles([{ path: o.out, text, mode: 0o644 }]);
        const summary = {
          file: o.out,
          deviceId: id,
          transcripts: (o.all ? all : [all[0]!]).map((t) => ({
            id: t.id,
            decision: t.decision,
            time: t.time,
          })),
        };
        if (o.json) printJson(summary);
        else
          process.stdout.write(
            `wrote ${o.all ? `${all.length} transcript${all.length === 1 ? '' : 's'}` : `transcript ${all[0]!.id} (${all[0]!.decision} at ${all[0]!.time})`} of device ${id} to ${o.out}\n` +
              color.dim(
                `verify offline: rampart transcript verify ${o.out} --key transcript-signing.pub.pem\n`,
              ),
          );
      }),
    [
      'rampart device transcript gw-0001 --out gw-0001.transcript.json',
      'rampart device transcript gw-0001 --all > gw-0001.transcripts.json',
      'rampart device transcript gw-0001 | rampart transcript verify -',
    ],
  );

  const decommission = withExamples(
    new Command('decommission')
      .description(
        'Take a device out of service for good: its certificates are revoked (cessationOfOperation), enrollment tokens dropped, gateway sessions ended; its history is kept',
      )
      .argument('<id>', 'device id')
      .action(async (id: string, _o, cmd: Command) => {
        const o = globalsOf(cmd);
        const r = await withClient(o, async (c) => {
          const before = await c.get<Device>(`/api/v1/devices/${seg(id)}`);
          const valid = await validCertificates(c, id);
          const device = await c.patch<Device>(`/api/v1/devices/${seg(id)}`, { status: 'decommissioned' });
          const still = new Set(await validCertificates(c, id));
          return {
            device,
            alreadyDecommissioned: before.status === 'decommissioned',
            revokedCertificates: valid.filter((s) => !still.has(s)),
          };
        });
        output(o, r, (x) => {
          if (x.alreadyDecommissioned) {
            process.stdout.write(
              `device ${x.device.id} was decommissioned already (since ${x.device.statusChangedAt})\n`,
            );
            return;
          }
          const n = x.revokedCertificates.length;
          process.stdout.write(
            `decommissioned device ${color.bold(x.device.id)}: ` +
              (n
                ? `revoked ${n} certificate${n === 1 ? '' : 's'} (cessationOfOperation)`
                : 'it had no valid certificates') +
              ', dropped its enrollment tokens and ended its gateway sessions; its registry entry, trace and transcripts are kept\n',
          );
          for (const s of x.revokedCertificates) process.stdout.write(`  ${s}\n`);
          process.stdout.write(
            color.dim(
              `to provision it again after a factory reset: rampart device reprovision ${x.device.id}\n`,
            ),
          );
        });
      }),
    [
      'rampart device decommission gw-0001',
      'rampart device decommission gw-0001 --json | jq -r ".revokedCertificates[]"',
    ],
  );

  const reprovision = withExamples(
    new Command('reprovision')
      .description(
        'Let a decommissioned device enroll again (after a factory reset): decommissioned → pending; it then attests and enrolls with its birth certificate',
      )
      .argument('<id>', 'device id')
      .action(async (id: string, _o, cmd: Command) => {
        const o = globalsOf(cmd);
        const device = await withClient(o, async (c) => {
          const d = await c.get<Device>(`/api/v1/devices/${seg(id)}`);
          if (d.status !== 'decommissioned')
            throw new CliError(
              `device ${id} is ${d.status}, not decommissioned: there is nothing to reprovision`,
              EXIT.conflict,
              [`to take it out of service first: rampart device decommission ${id}`],
            );
          return c.patch<Device>(`/api/v1/devices/${seg(id)}`, { status: 'pending' });
        });
        output(o, device, (d) =>
          process.stdout.write(
            `device ${color.bold(d.id)} is ${statusColor(d.status)} again: after a factory reset it attests and enrolls with its birth certificate (rampart-agent provision)\n`,
          ),
        );
      }),
    ['rampart device reprovision gw-0001', 'rampart device reprovision gw-0001 --json'],
  );

  return [trace, attestation, transcript, decommission, reprovision];
}
