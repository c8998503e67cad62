import { Command, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type {
  LintResult,
  PolicyFinding,
  PolicyRecord,
  PolicyVersion,
  SimulateResult,
} from '@rampart/shared/api';
import { POLICY_ACTIONS, validatePolicyDocument, type PolicyDocument } from '@rampart/shared/policy';
import { globalsOf, withExamples } from '../command.js';
import { withClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { color, output, printFields, printJson, printTable, shortTime } from '../output.js';
import { loadServer } from '../server.js';
import { positiveInt, seg } from './fleet-common.js';

/** Read a policy document from a JSON or YAML file (`-` reads standard input). */
export function readPolicyFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new CliError(`cannot read ${file}: ${(err as Error).message}`, EXIT.usage);
  }
  const json = extname(file).toLowerCase() === '.json';
  try {
    return json ? (JSON.parse(text) as unknown) : (parseYaml(text) as unknown);
  } catch (err) {
    throw new CliError(
      `${file} is not valid ${json ? 'JSON' : 'YAML or JSON'}: ${(err as Error).message}`,
      EXIT.usage,
    );
  }
}

/** `statement 1 [devices/#]: warning allow-everything: …` */
export function formatFinding(f: PolicyFinding): string {
  const where = f.statement < 0 ? 'document' : `statement ${f.statement}`;
  const resource = f.resource !== undefined ? ` [${f.resource}]` : '';
  const severity = f.severity === 'error' ? color.red(f.severity) : color.yellow(f.severity);
  return `${where}${resource}: ${severity} ${f.code}: ${f.message}`;
}

function printFindings(findings: readonly PolicyFinding[], indent = ''): void {
  for (const f of findings) process.stdout.write(`${indent}${formatFinding(f)}\n`);
}

/** Offline lint: validation plus the server's lint, without a running Rampart. */
export async function lintDocument(doc: unknown): Promise<LintResult> {
  const v = validatePolicyDocument(doc);
  const { lintPolicy } = await loadServer();
  const shaped =
    typeof doc === 'object' && doc !== null && Array.isArray((doc as { statements?: unknown }).statements);
  if (shaped) {
    try {
      return { valid: v.ok, findings: lintPolicy(doc as PolicyDocument) };
    } catch {
      // fall back to the validation errors below
    }
  }
  if (v.ok) return { valid: true, findings: [] };
  return {
    valid: false,
    findings: v.errors.map((e) => ({
      severity: 'error' as const,
      statement: -1,
      code: 'invalid-document',
      message: `${e.path || '(document)'}: ${e.message}`,
    })),
  };
}

type TargetOptions = { device?: string; group?: string; model?: string };

function targetOf(
  o: TargetOptions,
  verb: string,
): { targetKind: 'device' | 'group' | 'model'; targetId: string } {
  const given = (['device', 'group', 'model'] as const).filter((k) => o[k] !== undefined);
  if (given.length !== 1)
    throw new CliError(`policy ${verb} needs exactly one of --device, --group or --model`, EXIT.usage, [
      `e.g. rampart policy ${verb} factory-lines --group line-3`,
    ]);
  const kind = given[0]!;
  return { targetKind: kind, targetId: o[kind]! };
}

function printRecordSummary(verb: string, r: PolicyRecord): void {
  process.stdout.write(`${verb} policy ${color.bold(r.name)} version ${r.version}\n`);
  if (r.findings.length > 0) {
    process.stdout.write('lint findings:\n');
    printFindings(r.findings, '  ');
  }
}

function attachmentsText(r: PolicyRecord): string {
  return r.attachments.map((a) => `${a.targetKind} ${a.targetId}`).join(', ');
}

function printPolicy(r: PolicyRecord): void {
  printFields([
    ['name', color.bold(r.name)],
    ['description', r.description],
    ['version', r.version],
    ['created', r.createdAt],
    ['updated', r.updatedAt],
  ]);
  process.stdout.write('\ndocument:\n');
  process.stdout.write(
    JSON.stringify(r.document, null, 2)
      .split('\n')
      .map((l) => `  ${l}`)
      .join('\n') + '\n',
  );
  process.stdout.write('\nattachments:\n');
  if (r.attachments.length === 0) process.stdout.write(color.dim('  none\n'));
  for (const a of r.attachments)
    process.stdout.write(
      `  ${a.targetKind} ${a.targetId}  ${color.dim(`(${a.attachedBy}, ${a.attachedAt})`)}\n`,
    );
  process.stdout.write('\nlint findings:\n');
  if (r.findings.length === 0) process.stdout.write(color.dim('  none\n'));
  printFindings(r.findings, '  ');
}

const targetOptions = (cmd: Command, verb: string) =>
  cmd
    .option('--device <id>', `${verb} a device`)
    .option('--group <id>', `${verb} a device group`)
    .option('--model <id>', `${verb} a device model`);

export function policyCommand(): Command {
  const policy = new Command('policy').description(
    'Gateway policies: what devices may connect, publish, subscribe and receive; lint and simulate',
  );

  policy.addCommand(
    withExamples(
      new Command('list')
        .description('List policies (the built-in default first) with attachments and lint findings')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf(cmd);
          const { items } = await withClient(o, (c) => c.get<{ items: PolicyRecord[] }>('/api/v1/policies'));
          output(o, items, (rows) =>
            printTable(
              rows,
              [
                ['NAME', (r) => r.name],
                ['VERSION', (r) => r.version],
                ['ATTACHMENTS', (r) => String(r.attachments.length)],
                ['FINDINGS', (r) => String(r.findings.length)],
                ['UPDATED', (r) => shortTime(r.updatedAt)],
                ['DESCRIPTION', (r) => r.description],
              ],
              'no policies',
            ),
          );
        }),
      [
        'rampart policy list',
        "rampart policy list --json | jq -r '.[] | select(.findings | length > 0) | .name'",
      ],
    ),
  );

  policy.addCommand(
    withExamples(
      new Command('show')
        .description('Show a policy: its document, attachments and lint findings (or one earlier version)')
        .argument('<name>', 'policy name')
        .addOption(
          new Option('--version <n>', "print this version's document").argParser((v) =>
            positiveInt(v, '--version', 1_000_000),
          ),
        )
        .action(async (name: string, _o, cmd: Command) => {
          const o = globalsOf<{ version?: number }>(cmd);
          if (o.version !== undefined) {
            const version = o.version;
            const { items } = await withClient(o, (c) =>
              c.get<{ items: PolicyVersion[] }>(`/api/v1/policies/${seg(name)}/versions`),
            );
            const v = items.find((x) => x.version === version);
            if (!v)
              throw new CliError(`policy ${name} has no version ${version}`, EXIT.notFound, [
                `versions: ${items.map((x) => x.version).join(', ') || 'none'}`,
              ]);
            if (o.json) printJson(v);
            else {
              process.stderr.write(
                color.dim(`policy ${v.name} version ${v.version} (${v.createdBy}, ${v.createdAt})\n`),
              );
              printJson(v.document);
            }
            return;
          }
          const record = await withClient(o, (c) => c.get<PolicyRecord>(`/api/v1/policies/${seg(name)}`));
          output(o, record, printPolicy);
        }),
      [
        'rampart policy show factory-lines',
        'rampart policy show factory-lines --version 1 > factory-lines.v1.json',
        'rampart policy show default --json | jq .document',
      ],
    ),
  );

  policy.addCommand(
    withExamples(
      new Command('create')
        .description('Create a policy (version 1) from a JSON or YAML document')
        .argument('<name>', 'policy name: letters, digits, ".", "_", "-"')
        .requiredOption('-f, --file <file>', 'the policy document, JSON or YAML (- for standard input)')
        .option('--description <text>', 'what the policy is for')
        .action(async (name: string, _o, cmd: Command) => {
          const o = globalsOf<{ file: string; description?: string }>(cmd);
          const document = readPolicyFile(o.file);
          const record = await withClient(o, (c) =>
            c.post<PolicyRecord>('/api/v1/policies', {
              name,
              ...(o.description !== undefined ? { description: o.description } : {}),
              document,
            }),
          );
          output(o, record, (r) => printRecordSummary('created', r));
        }),
      [
        'rampart policy create factory-lines --file factory-lines.yaml --description "line telemetry"',
        'rampart policy create readonly --file readonly.json --json',
      ],
    ),
  );

  policy.addCommand(
    withExamples(
      new Command('update')
        .description('Add a new version of a policy; live sessions it applies to are re-authorized at once')
        .argument('<name>', 'policy name')
        .requiredOption('-f, --file <file>', 'the new document, JSON or YAML (- for standard input)')
        .option('--description <text>', 'a new description')
        .action(async (name: string, _o, cmd: Command) => {
          const o = globalsOf<{ file: string; description?: string }>(cmd);
          const document = readPolicyFile(o.file);
          const record = await withClient(o, (c) =>
            c.put<PolicyRecord>(`/api/v1/policies/${seg(name)}`, {
              ...(o.description !== undefined ? { description: o.description } : {}),
              document,
            }),
          );
          output(o, record, (r) => printRecordSummary('updated', r));
        }),
      [
        'rampart policy update factory-lines --file factory-lines.yaml',
        'rampart policy show factory-lines --json | jq .document > p.json && $EDITOR p.json && rampart policy update factory-lines -f p.json',
      ],
    ),
  );

  policy.addCommand(
    withExamples(
      new Command('delete')
        .description('Delete a policy, every version and its attachments')
        .argument('<name>', 'policy name')
        .option('--yes', 'confirm: devices it applies to lose what it allowed at once')
        .action(async (name: string, _o, cmd: Command) => {
          const o = globalsOf<{ yes?: boolean }>(cmd);
          if (!o.yes)
            throw new CliError(`refusing to delete policy ${name} without --yes`, EXIT.usage, [
              `run: rampart policy delete ${name} --yes`,
            ]);
          const record = await withClient(o, (c) => c.delete<PolicyRecord>(`/api/v1/policies/${seg(name)}`));
          output(o, record, (r) =>
            process.stdout.write(
              `deleted policy ${r.name} (version ${r.version}` +
                (r.attachments.length ? `, detached from ${attachmentsText(r)}` : '') +
                ')\n',
            ),
          );
        }),
      ['rampart policy delete factory-lines --yes'],
    ),
  );

  policy.addCommand(
    withExamples(
      targetOptions(
        new Command('attach')
          .description('Attach a policy to exactly one device, device group or device model')
          .argument('<name>', 'policy name'),
        'attach to',
      ).action(async (name: string, _o, cmd: Command) => {
        const o = globalsOf<TargetOptions>(cmd);
        const target = targetOf(o, 'attach');
        const record = await withClient(o, (c) =>
          c.post<PolicyRecord>(`/api/v1/policies/${seg(name)}/attachments`, target),
        );
        output(o, record, (r) =>
          process.stdout.write(
            `attached policy ${r.name} v${r.version} to ${target.targetKind} ${target.targetId}\n`,
          ),
        );
      }),
      [
        'rampart policy attach factory-lines --group line-3',
        'rampart policy attach readonly --device dw-0001',
        'rampart policy attach dw100-base --model DW100',
      ],
    ),
  );

  policy.addCommand(
    withExamples(
      targetOptions(
        new Command('detach')
          .description('Detach a policy from a device, device group or device model')
          .argument('<name>', 'policy name'),
        'detach from',
      ).action(async (name: string, _o, cmd: Command) => {
        const o = globalsOf<TargetOptions>(cmd);
        const { targetKind, targetId } = targetOf(o, 'detach');
        const record = await withClient(o, (c) =>
          c.delete<PolicyRecord>(
            `/api/v1/policies/${seg(name)}/attachments/${seg(targetKind)}/${seg(targetId)}`,
          ),
        );
        output(o, record, (r) =>
          process.stdout.write(`detached policy ${r.name} from ${targetKind} ${targetId}\n`),
        );
      }),
      [
        'rampart policy detach factory-lines --group line-3',
        'rampart policy detach readonly --device dw-0001',
      ],
    ),
  );

  policy.addCommand(
    withExamples(
      new Command('lint')
        .description('Validate and lint a policy document offline (no server); exit 1 when there are errors')
        .argument('<file>', 'the policy document, JSON or YAML (- for standard input)')
        .action(async (file: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const result = await lintDocument(readPolicyFile(file));
          const errors = result.findings.filter((f) => f.severity === 'error').length;
          output(o, result, (r) => {
            printFindings(r.findings);
            const warnings = r.findings.length - errors;
            process.stdout.write(
              (errors ? color.red(`${file}: ${errors} error${errors === 1 ? '' : 's'}`) : `${file}: ok`) +
                (warnings ? `, ${warnings} warning${warnings === 1 ? '' : 's'}` : '') +
                '\n',
            );
          });
          if (errors > 0 || !result.valid) process.exitCode = EXIT.failed;
        }),
      [
        'rampart policy lint factory-lines.yaml',
        'rampart policy lint policy.json --json | jq -r \'.findings[] | select(.severity == "error") | .message\'',
      ],
    ),
  );

  policy.addCommand(
    withExamples(
      new Command('simulate')
        .description('What the gateway would decide for a device and why; exit 0 when allowed, 1 when denied')
        .requiredOption('--device <id>', 'the device')
        .addOption(
          new Option('--action <action>', 'the MQTT action').choices(POLICY_ACTIONS).makeOptionMandatory(),
        )
        .requiredOption('--topic <topic>', 'the topic, topic filter (subscribe) or client id (connect)')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<{ device: string; action: string; topic: string }>(cmd);
          const r = await withClient(o, (c) =>
            c.post<SimulateResult>('/api/v1/policies/simulate', {
              device: o.device,
              action: o.action,
              resource: o.topic,
            }),
          );
          output(o, r, (x) => {
            process.stdout.write(
              `${x.allowed ? color.green('ALLOWED') : color.red('DENIED')}  ${x.action} ${x.resource} for device ${x.device} (${x.effect})\n`,
            );
            process.stdout.write(`reason: ${x.reason}\n`);
            const s = x.statement;
            process.stdout.write(
              s
                ? `statement: ${s.index}${s.sid ? ` (sid ${s.sid})` : ''} of policy ${s.policy} v${s.version}, ` +
                    `${s.attachedTo === 'default' ? 'attached by default' : `on ${s.attachedTo} ${s.target}`}, ` +
                    `resource ${s.resource}\n`
                : 'statement: none (no statement matched)\n',
            );
            process.stdout.write('policies in force, in order:\n');
            if (x.policies.length === 0) process.stdout.write(color.dim('  none\n'));
            x.policies.forEach((p, i) =>
              process.stdout.write(
                `  ${i + 1}. ${p.name} v${p.version}  ${p.attachedTo === 'default' ? 'default' : `${p.attachedTo} ${p.target}`}\n`,
              ),
            );
          });
          if (!r.allowed) process.exitCode = EXIT.failed;
        }),
      [
        'rampart policy simulate --device dw-0001 --action publish --topic devices/dw-0001/telemetry',
        'rampart policy simulate --device dw-0001 --action subscribe --topic "factory/+/alerts" --json',
      ],
    ),
  );
  return policy;
}
