import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import {
  ENROLLMENT_POLICY_KINDS,
  type EnrollmentPolicyBody,
  type EnrollmentPolicyKind,
  type EnrollmentPolicyView,
  type Placement,
} from '@rampart/shared/api';
import { globalsOf, withExamples } from '../command.js';
import { withClient, type ApiClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { color, output, printFields, printTable, shortTime } from '../output.js';
import { ATTR_HELP, collect, parseAttrs, positiveInt, seg } from './fleet-common.js';
import { intoNewFiles, readCertificate, readPublicKey, readText, sha256Hex, spkiSha256 } from './files.js';

type PolicyConfig = NonNullable<EnrollmentPolicyBody['config']>;

/** The answer of POST /api/v1/enrollment-policies/{name}/claim-certificate. */
interface IssuedClaimCertificate {
  certificate: string;
  serial: string;
  chain: string[];
  privateKey?: string;
  fingerprint: string;
  notAfter: string;
}

/** Options shared by `create` and `update`. */
interface PolicyOptions {
  issuer: string[];
  models?: string[];
  batch?: string;
  allow: string[];
  allowFile?: string;
  rate?: number;
  device?: string;
  publicKey?: string;
  certificate?: string;
  configJson?: string;
  model?: string;
  hardwareRevision?: string;
  group: string[];
  attr: string[];
  shadow?: string;
  description?: string;
}

/** `a,b c` → [a, b, c]; repeatable. */
function idList(value: string, previous: string[] = []): string[] {
  return [...previous, ...value.split(/[\s,]+/).filter(Boolean)];
}

/** Device ids from a file: one per line (or separated by commas or spaces); `#` starts a comment. */
function readIdFile(path: string): string[] {
  return readText(path, 'allowlist file')
    .split(/\r?\n/)
    .map((l) => l.replace(/#.*$/, ''))
    .flatMap((l) => l.split(/[\s,]+/))
    .filter(Boolean);
}

function jsonObject(value: string, flag: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (err) {
    throw new CliError(`${flag} is not valid JSON: ${(err as Error).message}`, EXIT.usage, [
      `e.g. ${flag} '{"firmwareChannel":"stable"}'`,
    ]);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new CliError(`${flag} must be a JSON object`, EXIT.usage);
  return parsed as Record<string, unknown>;
}

/** Which flags belong to which kind: a flag of another kind is a mistake worth reporting. */
const KIND_FLAGS: Record<EnrollmentPolicyKind, (keyof PolicyOptions)[]> = {
  group: ['issuer', 'models'],
  claim: ['batch', 'allow', 'allowFile', 'rate'],
  individual: ['device', 'publicKey', 'certificate'],
};
const FLAG_NAMES: Partial<Record<keyof PolicyOptions, string>> = {
  issuer: '--issuer',
  models: '--models',
  batch: '--batch',
  allow: '--allow',
  allowFile: '--allow-file',
  rate: '--rate',
  device: '--device',
  publicKey: '--public-key',
  certificate: '--certificate',
};

function given(o: PolicyOptions, k: keyof PolicyOptions): boolean {
  const v = o[k];
  return Array.isArray(v) ? v.length > 0 : v !== undefined;
}

function checkKindFlags(kind: EnrollmentPolicyKind, o: PolicyOptions): void {
  for (const [other, flags] of Object.entries(KIND_FLAGS) as [
    EnrollmentPolicyKind,
    (keyof PolicyOptions)[],
  ][]) {
    if (other === kind) continue;
    const wrong = flags.find((f) => given(o, f));
    if (wrong)
      throw new CliError(
        `${FLAG_NAMES[wrong]} is for ${other} policies, and this one is a ${kind} policy`,
        EXIT.usage,
      );
  }
  if (o.publicKey && o.certificate)
    throw new CliError(
      'pass --public-key or --certificate, not both: an individual policy knows the device by one',
      EXIT.usage,
    );
}

/** The config the flags set (only what was given). */
function configFlags(o: PolicyOptions): PolicyConfig {
  const c: PolicyConfig = {};
  if (o.issuer.length) c.issuers = o.issuer;
  if (o.models) c.models = o.models;
  if (o.batch !== undefined) c.batch = o.batch;
  if (o.allow.length || o.allowFile)
    c.allowlist = [...new Set([...o.allow, ...(o.allowFile ? readIdFile(o.allowFile) : [])])];
  if (o.rate !== undefined) c.ratePerMinute = o.rate;
  if (o.device !== undefined) c.deviceId = o.device;
  if (o.publicKey) c.keyFingerprint = spkiSha256(readPublicKey(o.publicKey, '--public-key'));
  if (o.certificate) c.certificateFingerprint = sha256Hex(readCertificate(o.certificate).raw);
  return c;
}

/** The placement the flags set (only what was given). */
function placementFlags(o: PolicyOptions): Placement {
  const p: Placement = {};
  if (o.model !== undefined) p.model = o.model;
  if (o.hardwareRevision !== undefined) p.hardwareRevision = o.hardwareRevision;
  if (o.group.length) p.groups = o.group;
  if (o.attr.length) p.attributes = parseAttrs(o.attr);
  if (o.shadow !== undefined) p.shadow = jsonObject(o.shadow, '--shadow');
  return p;
}

function addPolicyOptions(cmd: Command): Command {
  return cmd
    .option('--description <text>', 'what the policy is for')
    .option(
      '--issuer <issuer>',
      'group: accept birth certificates from *, station:NAME, manufacturer:NAME or rampart; repeatable',
      collect,
      [],
    )
    .option('--models <models>', 'group: only devices of these models (comma-separated)', (v) => idList(v))
    .option('--batch <batch>', 'claim: the batch whose devices share the claim certificate')
    .option(
      '--allow <ids>',
      'claim: device ids that may enroll, each once (comma-separated; repeatable)',
      idList,
      [],
    )
    .option('--allow-file <file>', 'claim: device ids from a file, one per line (# comments)')
    .option('--rate <n>', 'claim: enrollments admitted per minute (default 60)', (v) =>
      positiveInt(v, '--rate', 100_000),
    )
    .option('--device <id>', 'individual: the device')
    .option('--public-key <file>', "individual: the device's public key (PEM); its SHA-256 is stored")
    .option(
      '--certificate <file>',
      'individual: a certificate the device holds (PEM or DER); its SHA-256 is stored',
    )
    .option(
      '--config-json <json>',
      'config as a JSON object, as the API takes it (the flags above take precedence)',
    )
    .option('--model <model>', 'placement: model for devices the manifest does not give one')
    .option('--hardware-revision <revision>', 'placement: hardware revision for new devices')
    .option('--group <group>', 'placement: static group new devices join; repeatable', collect, [])
    .option('--attr <name=value>', `placement: ${ATTR_HELP}`, collect, [])
    .option('--shadow <json>', 'placement: initial desired shadow, a JSON object');
}

function kindText(kind: string): string {
  return kind === 'group' ? 'group (zero-touch)' : kind === 'claim' ? 'claim certificate' : 'individual';
}

/** Who a policy admits, in a few words. */
export function policySummary(p: EnrollmentPolicyView): string {
  const c = p.config;
  switch (p.kind) {
    case 'group':
      return (
        `issuers ${(c.issuers ?? []).join(', ') || 'none'}` +
        (c.models?.length ? `; models ${c.models.join(', ')}` : '')
      );
    case 'claim': {
      const n = c.allowlist?.length ?? 0;
      return `batch ${c.batch ?? '-'}; ${n} device${n === 1 ? '' : 's'} allowed; ${c.ratePerMinute ?? 60}/min`;
    }
    case 'individual':
      return (
        `device ${c.deviceId ?? '-'}` +
        (c.keyFingerprint ? ` by key ${c.keyFingerprint.slice(0, 16)}…` : '') +
        (c.certificateFingerprint ? ` by certificate ${c.certificateFingerprint.slice(0, 16)}…` : '')
      );
  }
}

function placementSummary(p: Placement): string {
  const parts: string[] = [];
  if (p.model) parts.push(`model ${p.model}`);
  if (p.hardwareRevision) parts.push(`revision ${p.hardwareRevision}`);
  if (p.groups?.length) parts.push(`groups ${p.groups.join(',')}`);
  if (p.attributes && Object.keys(p.attributes).length) {
    const n = Object.keys(p.attributes).length;
    parts.push(`${n} attribute${n === 1 ? '' : 's'}`);
  }
  if (p.shadow && Object.keys(p.shadow).length) parts.push('shadow');
  return parts.join('; ');
}

const SHOWN_ALLOWED = 20;

function printPolicy(p: EnrollmentPolicyView): void {
  const c = p.config;
  const allow = c.allowlist ?? [];
  printFields(
    [
      ['name', color.bold(p.name)],
      ['kind', kindText(p.kind)],
      ['version', p.version],
      ['enabled', p.enabled ? color.green('yes') : color.yellow('no')],
      ['description', p.description],
      ['created', p.createdAt],
      ['updated', p.updatedAt],
      ...(p.kind === 'group'
        ? ([
            ['issuers', (c.issuers ?? []).join(', ')],
            ['models', c.models?.length ? c.models.join(', ') : 'any'],
          ] as [string, unknown][])
        : []),
      ...(p.kind === 'claim'
        ? ([
            ['batch', c.batch],
            [
              'allowlist',
              `${allow.length} device${allow.length === 1 ? '' : 's'}` +
                (allow.length
                  ? `: ${allow.slice(0, SHOWN_ALLOWED).join(', ')}${allow.length > SHOWN_ALLOWED ? ', …' : ''}`
                  : ' (none may enroll)'),
            ],
            ['rate', `${c.ratePerMinute ?? 60} enrollments a minute`],
          ] as [string, unknown][])
        : []),
      ...(p.kind === 'individual'
        ? ([
            ['device', c.deviceId],
            ['key sha256', c.keyFingerprint],
            ['cert sha256', c.certificateFingerprint],
          ] as [string, unknown][])
        : []),
      ['placement', placementSummary(p.placement) || 'the manifest decides (model, revision)'],
    ],
    14,
  );
  const pl = p.placement;
  for (const [k, v] of Object.entries(pl.attributes ?? {}))
    process.stdout.write(`  attribute ${k} = ${JSON.stringify(v)}\n`);
  if (pl.shadow && Object.keys(pl.shadow).length)
    process.stdout.write(`  desired shadow ${JSON.stringify(pl.shadow)}\n`);
}

async function findPolicy(c: ApiClient, name: string): Promise<EnrollmentPolicyView> {
  return c.get<EnrollmentPolicyView>(`/api/v1/enrollment-policies/${seg(name)}`);
}

function printChanged(verb: string, p: EnrollmentPolicyView): void {
  process.stdout.write(
    `${verb} enrollment policy ${color.bold(p.name)} version ${p.version} (${p.kind}${p.enabled ? '' : ', disabled'}): ${policySummary(p)}\n`,
  );
}

/** `rampart enrollment policy`: who may enroll, and where a new device lands in the registry. */
export function enrollmentPolicyCommand(): Command {
  const policy = new Command('policy').description(
    'Enrollment policies: who may enroll (group, claim certificate, individual) and where new devices land',
  );

  policy.addCommand(
    withExamples(
      addPolicyOptions(
        new Command('create')
          .description('Create an enrollment policy (version 1)')
          .argument('<name>', 'policy name: lower-case letters, digits, ".", "_", "-"')
          .addOption(
            new Option('--kind <kind>', 'group (zero-touch, by birth certificate), claim or individual')
              .choices([...ENROLLMENT_POLICY_KINDS])
              .makeOptionMandatory(),
          )
          .option('--disabled', 'create it disabled'),
      )
        .addHelpText(
          'after',
          `
Kinds:
  group       birth certificate from a listed issuer, device in an imported manifest (zero-touch)
  claim       a claim certificate shared by a batch (rampart enrollment policy claim-certificate);
              only device ids on the allowlist, each once, at most --rate a minute; deny by default
  individual  one device, known by its public key or by a certificate it holds`,
        )
        .action(async (name: string, _o, cmd: Command) => {
          const o = globalsOf<PolicyOptions & { kind: EnrollmentPolicyKind; disabled?: boolean }>(cmd);
          checkKindFlags(o.kind, o);
          const config = {
            ...(o.configJson ? jsonObject(o.configJson, '--config-json') : {}),
            ...configFlags(o),
          } as PolicyConfig;
          if (o.kind === 'claim' && !config.batch)
            throw new CliError(
              'a claim policy needs --batch: the batch whose devices share the claim certificate',
              EXIT.usage,
            );
          if (
            o.kind === 'individual' &&
            (!config.deviceId || !(config.keyFingerprint || config.certificateFingerprint))
          )
            throw new CliError(
              'an individual policy needs --device and --public-key or --certificate',
              EXIT.usage,
              [
                'e.g. rampart enrollment policy create dw-0001-key --kind individual --device dw-0001 --public-key dw-0001.pub.pem',
              ],
            );
          const placement = placementFlags(o);
          const body: EnrollmentPolicyBody = {
            name,
            kind: o.kind,
            config,
            placement,
            ...(o.description !== undefined ? { description: o.description } : {}),
            ...(o.disabled ? { enabled: false } : {}),
          };
          const p = await withClient(o, (c) =>
            c.post<EnrollmentPolicyView>('/api/v1/enrollment-policies', body),
          );
          output(o, p, (x) => printChanged('created', x));
        }),
      [
        'rampart enrollment policy create line-3 --kind group --issuer station:line-3 --models DW100 --group berlin --attr region=eu',
        'rampart enrollment policy create b-2026-11 --kind claim --batch b-2026-11 --allow-file b-2026-11.ids --rate 30',
        'rampart enrollment policy create dw-0001 --kind individual --device dw-0001 --public-key dw-0001.pub.pem --model DW100',
      ],
    ),
  );

  policy.addCommand(
    withExamples(
      new Command('list').description('List enrollment policies').action(async (_o, cmd: Command) => {
        const o = globalsOf(cmd);
        const rows = await withClient(o, (c) => c.get<EnrollmentPolicyView[]>('/api/v1/enrollment-policies'));
        output(o, rows, (r) =>
          printTable(
            r,
            [
              ['NAME', (p) => p.name],
              ['KIND', (p) => p.kind],
              ['VERSION', (p) => p.version],
              ['ENABLED', (p) => (p.enabled ? 'yes' : color.yellow('no'))],
              ['ADMITS', (p) => policySummary(p)],
              ['PLACEMENT', (p) => placementSummary(p.placement)],
              ['UPDATED', (p) => shortTime(p.updatedAt)],
              ['DESCRIPTION', (p) => p.description],
            ],
            'no enrollment policies',
          ),
        );
      }),
      [
        'rampart enrollment policy list',
        'rampart enrollment policy list --json | jq -r \'.[] | select(.kind == "claim") | .name\'',
      ],
    ),
  );

  policy.addCommand(
    withExamples(
      new Command('show')
        .description('Show an enrollment policy: who it admits, where devices land, its version')
        .argument('<name>', 'policy name')
        .action(async (name: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const p = await withClient(o, (c) => findPolicy(c, name));
          output(o, p, printPolicy);
        }),
      [
        'rampart enrollment policy show factory',
        'rampart enrollment policy show b-2026-11 --json | jq .config.allowlist',
      ],
    ),
  );

  policy.addCommand(
    withExamples(
      addPolicyOptions(
        new Command('update')
          .description('Change an enrollment policy; its version increases')
          .argument('<name>', 'policy name')
          .option(
            '--disallow <ids>',
            'claim: remove these device ids from the allowlist (comma-separated; repeatable)',
            idList,
            [],
          )
          .addOption(new Option('--enable', 'enable the policy').conflicts('disable'))
          .addOption(
            new Option('--disable', 'disable the policy: it admits nobody until enabled').conflicts('enable'),
          ),
      )
        .addHelpText(
          'after',
          `
Each flag replaces that setting and leaves the others as they are, except: --allow and --allow-file
add to the allowlist and --disallow removes from it; --attr adds or changes one attribute; --config-json
sets the keys it names.`,
        )
        .action(async (name: string, _o, cmd: Command) => {
          const o = globalsOf<PolicyOptions & { disallow: string[]; enable?: boolean; disable?: boolean }>(
            cmd,
          );
          const p = await withClient(o, async (c) => {
            const current = await findPolicy(c, name);
            checkKindFlags(current.kind, o);
            if (o.disallow.length && current.kind !== 'claim')
              throw new CliError(
                `--disallow is for claim policies, and ${name} is a ${current.kind} policy`,
                EXIT.usage,
              );
            const flags = configFlags(o);
            const config: PolicyConfig = {
              ...current.config,
              ...(o.configJson ? jsonObject(o.configJson, '--config-json') : {}),
              ...flags,
            };
            if (flags.allowlist || o.disallow.length) {
              const drop = new Set(o.disallow);
              config.allowlist = [
                ...new Set([...(current.config.allowlist ?? []), ...(flags.allowlist ?? [])]),
              ].filter((id) => !drop.has(id));
            }
            // One way of knowing the device at a time.
            if (flags.keyFingerprint) delete config.certificateFingerprint;
            if (flags.certificateFingerprint) delete config.keyFingerprint;
            const placementGiven = placementFlags(o);
            const placement: Placement = { ...current.placement, ...placementGiven };
            if (placementGiven.attributes)
              placement.attributes = { ...current.placement.attributes, ...placementGiven.attributes };
            const body = {
              ...(JSON.stringify(config) !== JSON.stringify(current.config) ? { config } : {}),
              ...(JSON.stringify(placement) !== JSON.stringify(current.placement) ? { placement } : {}),
              ...(o.description !== undefined ? { description: o.description } : {}),
              ...(o.enable ? { enabled: true } : o.disable ? { enabled: false } : {}),
            };
            if (Object.keys(body).length === 0)
              throw new CliError('nothing to change: pass the settings to change (see --help)', EXIT.usage);
            return c.patch<EnrollmentPolicyView>(`/api/v1/enrollment-policies/${seg(name)}`, body);
          });
          output(o, p, (x) => printChanged('updated', x));
        }),
      [
        'rampart enrollment policy update b-2026-11 --allow dw-2001,dw-2002 --rate 10',
        'rampart enrollment policy update factory --issuer station:line-1 --issuer manufacturer:acme',
        'rampart enrollment policy update line-3 --disable',
      ],
    ),
  );

  policy.addCommand(
    withExamples(
      new Command('delete')
        .description(
          'Delete an enrollment policy: it admits nobody from now on (transcripts keep its name and version)',
        )
        .argument('<name>', 'policy name')
        .action(async (name: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const r = await withClient(o, (c) =>
            c.delete<{ deleted: string }>(`/api/v1/enrollment-policies/${seg(name)}`),
          );
          output(o, r, (x) => process.stdout.write(`deleted enrollment policy ${x.deleted}\n`));
        }),
      ['rampart enrollment policy delete line-3'],
    ),
  );

  policy.addCommand(
    withExamples(
      new Command('claim-certificate')
        .description(
          "Issue the claim certificate of a claim policy: the batch's devices share it to enroll, each once, if on the allowlist",
        )
        .argument('<name>', 'claim policy name')
        .option(
          '--csr <file>',
          'a PKCS#10 request (PEM) for a key you keep; without it Rampart makes the key',
        )
        .option('--out-dir <dir>', 'where to write claim.crt, claim-chain.pem and claim.key (mode 0600)', '.')
        .option('--days <n>', 'validity in days (default 365)', (v) => positiveInt(v, '--days', 3650))
        .action(async (name: string, _o, cmd: Command) => {
          const o = globalsOf<{ csr?: string; outDir: string; days?: number }>(cmd);
          let csr: string | undefined;
          if (o.csr) {
            csr = readText(o.csr, 'certificate request');
            if (!csr.includes('-----BEGIN CERTIFICATE REQUEST-----'))
              throw new CliError(`${o.csr} is not a PEM certificate request`, EXIT.usage, [
                'e.g. openssl req -new -key claim.key -subj /CN=claim -out claim.csr',
              ]);
          }
          const files = {
            certificate: join(o.outDir, 'claim.crt'),
            chain: join(o.outDir, 'claim-chain.pem'),
            ...(csr ? {} : { key: join(o.outDir, 'claim.key') }),
          };
          try {
            mkdirSync(o.outDir, { recursive: true, mode: 0o700 });
          } catch (err) {
            throw new CliError(`cannot create ${o.outDir}: ${(err as Error).message}`, EXIT.usage);
          }
          const pem = (s: string) => (s.endsWith('\n') ? s : `${s}\n`);
          // The files are created first: a claim certificate is only issued when it can be kept.
          const issued = await intoNewFiles(
            [
              { path: files.certificate, mode: 0o644 },
              { path: files.chain, mode: 0o644 },
              ...(files.key ? [{ path: files.key, mode: 0o600 }] : []),
            ],
            async () => {
              const r = await withClient(o, (c) =>
                c.post<IssuedClaimCertificate>(`/api/v1/enrollment-policies/${seg(name)}/claim-certificate`, {
                  ...(csr ? { csr } : {}),
                  ...(o.days ? { validityDays: o.days } : {}),
                }),
              );
              if (!csr && !r.privateKey)
                throw new CliError(
                  'the platform issued a certificate but returned no key for it',
                  EXIT.failed,
                );
              return {
                value: r,
                texts: [pem(r.certificate), r.chain.map(pem).join(''), ...(csr ? [] : [pem(r.privateKey!)])],
              };
            },
          );
          const result = {
            policy: name,
            serial: issued.serial,
            fingerprint: issued.fingerprint,
            notAfter: issued.notAfter,
            files,
          };
          output(o, result, (r) => {
            process.stdout.write(
              `issued claim certificate ${r.serial} of ${color.bold(r.policy)} (sha256 ${r.fingerprint.slice(0, 16)}…, valid until ${r.notAfter}):\n` +
                `  ${r.files.certificate}\n  ${r.files.chain}\n` +
                (r.files.key ? `  ${r.files.key} (mode 0600)\n` : ''),
            );
            process.stdout.write(
              color.dim(
                'every device of the batch presents it (as its TLS client certificate) to enroll once; ' +
                  `only ids on the allowlist are admitted: rampart enrollment policy show ${r.policy}\n`,
              ),
            );
          });
        }),
      [
        'rampart enrollment policy claim-certificate b-2026-11 --out-dir ./firmware/claim',
        'rampart enrollment policy claim-certificate b-2026-11 --csr claim.csr --out-dir ./claim --json',
      ],
    ),
  );
  return policy;
}
