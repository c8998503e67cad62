import { Command, Option } from 'commander';
import type {
  AttestationMode,
  ModelAttestationBody,
  ModelAttestationView,
  ReferenceValueView,
} from '@rampart/shared/api';
import { MEASURED_COMPONENTS } from '@rampart/shared/attestation';
import { globalsOf, withExamples } from '../command.js';
import { withClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { color, output, printFields, printTable, shortTime } from '../output.js';
import { positiveInt, seg } from './fleet-common.js';

function sha256Arg(value: string): string {
  const hex = value.trim().toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex))
    throw new CliError(
      `--sha256 must be a SHA-256 in hex (64 characters), got ${JSON.stringify(value)}`,
      EXIT.usage,
      ['e.g. the first field of `sha256sum firmware.bin`'],
    );
  return hex;
}

function modeText(mode: AttestationMode): string {
  return mode === 'required' ? color.green(mode) : mode === 'optional' ? color.yellow(mode) : color.red(mode);
}

function printSettings(s: ModelAttestationView): void {
  printFields(
    [
      ['model', color.bold(s.model)],
      [
        'attestation',
        `${modeText(s.attestation)}${s.configured ? '' : color.dim(' (default: not configured for this model)')}`,
      ],
      [
        'accept warning',
        s.acceptWarning ? 'yes: a warning result admits the device' : 'no: only affirming results admit',
      ],
      [
        'software anchor',
        s.admitSoftwareAnchor
          ? 'admitted (weaker: the key is not held in hardware)'
          : 'refused: only TPM and PKCS#11 anchors',
      ],
      ['certificates', `valid ${s.certificateHours}h`],
    ],
    16,
  );
}

interface SettingsOptions {
  require?: boolean;
  optional?: boolean;
  off?: boolean;
  acceptWarning?: boolean;
  admitSoftware?: boolean;
  certificateHours?: number;
}

/** `rampart attestation`: reference values and per-model attestation requirements. */
export function attestationCommand(): Command {
  const attestation = new Command('attestation').description(
    'Remote attestation: known-good measurements (reference values) and what each model must prove',
  );
  const reference = new Command('reference').description(
    'Reference values: the SHA-256 of software a model may boot (anything else is contraindicated)',
  );
  attestation.addCommand(reference);

  reference.addCommand(
    withExamples(
      new Command('add')
        .description('Register a known-good measurement for a model and component')
        .requiredOption('--model <model>', 'device model id')
        .addOption(
          new Option('--component <component>', 'measured component')
            .choices([...MEASURED_COMPONENTS])
            .makeOptionMandatory(),
        )
        .requiredOption('--sha256 <hex>', 'SHA-256 of the measured image, hex', sha256Arg)
        .option('--description <text>', 'what it is, e.g. "firmware 2.4.1"')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<{ model: string; component: string; sha256: string; description?: string }>(
            cmd,
          );
          const r = await withClient(o, (c) =>
            c.post<ReferenceValueView>('/api/v1/reference-values', {
              model: o.model,
              component: o.component,
              digest: o.sha256,
              ...(o.description !== undefined ? { description: o.description } : {}),
            }),
          );
          output(o, r, (x) =>
            process.stdout.write(
              `added reference value ${color.bold(String(x.id))}: ${x.model} ${x.component} ${x.digest}\n`,
            ),
          );
        }),
      [
        'rampart attestation reference add --model DW100 --component application --sha256 "$(sha256sum app-2.4.1.bin | cut -d" " -f1)" --description "app 2.4.1"',
        'rampart attestation reference add --model DW100 --component os --sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08',
      ],
    ),
  );

  reference.addCommand(
    withExamples(
      new Command('list')
        .description('List reference values, by model and component')
        .option('--model <model>', 'only this model')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<{ model?: string }>(cmd);
          const rows = await withClient(o, (c) =>
            c.get<ReferenceValueView[]>('/api/v1/reference-values', { model: o.model }),
          );
          output(o, rows, (r) =>
            printTable(
              r,
              [
                ['ID', (v) => v.id],
                ['MODEL', (v) => v.model],
                ['COMPONENT', (v) => v.component],
                ['SHA-256', (v) => v.digest],
                ['SOURCE', (v) => v.source],
                ['ADDED', (v) => shortTime(v.createdAt)],
                ['DESCRIPTION', (v) => v.description],
              ],
              o.model ? `no reference values for ${o.model}` : 'no reference values',
            ),
          );
        }),
      [
        'rampart attestation reference list --model DW100',
        "rampart attestation reference list --json | jq -r '.[].digest'",
      ],
    ),
  );

  reference.addCommand(
    withExamples(
      new Command('remove')
        .description('Remove a reference value: devices measuring it are contraindicated from now on')
        .argument('<id>', 'its id, as `rampart attestation reference list` shows it', (v) =>
          positiveInt(v, 'the reference value id', Number.MAX_SAFE_INTEGER),
        )
        .action(async (id: number, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const r = await withClient(o, (c) =>
            c.delete<ReferenceValueView>(`/api/v1/reference-values/${id}`),
          );
          output(o, r, (x) =>
            process.stdout.write(`removed reference value ${x.id}: ${x.model} ${x.component} ${x.digest}\n`),
          );
        }),
      ['rampart attestation reference remove 12'],
    ),
  );

  attestation.addCommand(
    withExamples(
      new Command('settings')
        .description(
          "Show or change what a model's devices must prove before every certificate: without flags, show it",
        )
        .argument('<model>', 'device model id')
        .addOption(
          new Option('--require', 'a fresh admitting result before every issuance and renewal').conflicts([
            'optional',
            'off',
          ]),
        )
        .addOption(
          new Option('--optional', 'check attestation when a device presents it').conflicts([
            'require',
            'off',
          ]),
        )
        .addOption(new Option('--off', 'do not check attestation').conflicts(['require', 'optional']))
        .option('--accept-warning', 'a warning result (unreferenced component) admits the device')
        .option('--no-accept-warning', 'only affirming results admit')
        .option('--admit-software', 'admit devices whose key is in software (weaker than TPM or PKCS#11)')
        .option('--no-admit-software', 'admit only hardware trust anchors')
        .option('--certificate-hours <n>', 'validity of operational certificates, in hours', (v) =>
          positiveInt(v, '--certificate-hours', 24 * 397),
        )
        .addHelpText(
          'after',
          `
Without a setting, factory-made devices require a fresh admitting result and others do not.`,
        )
        .action(async (model: string, _o, cmd: Command) => {
          const o = globalsOf<SettingsOptions>(cmd);
          const mode: AttestationMode | undefined = o.require
            ? 'required'
            : o.optional
              ? 'optional'
              : o.off
                ? 'off'
                : undefined;
          const body: ModelAttestationBody = {
            ...(mode ? { attestation: mode } : {}),
            ...(o.acceptWarning !== undefined ? { acceptWarning: o.acceptWarning } : {}),
            ...(o.admitSoftware !== undefined ? { admitSoftwareAnchor: o.admitSoftware } : {}),
            ...(o.certificateHours !== undefined ? { certificateHours: o.certificateHours } : {}),
          };
          const path = `/api/v1/device-models/${seg(model)}/attestation`;
          const changing = Object.keys(body).length > 0;
          const s = await withClient(o, (c) =>
            changing ? c.put<ModelAttestationView>(path, body) : c.get<ModelAttestationView>(path),
          );
          output(o, s, (x) => {
            if (changing)
              process.stdout.write(`updated the attestation settings of ${color.bold(x.model)}\n`);
            printSettings(x);
          });
        }),
      [
        'rampart attestation settings DW100',
        'rampart attestation settings DW100 --require --no-accept-warning --no-admit-software',
        'rampart attestation settings GW-2 --optional --certificate-hours 72 --json',
      ],
    ),
  );
  return attestation;
}
