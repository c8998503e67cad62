import { Command } from 'commander';
import type { CreatedEnrollmentToken, EnrollmentTokenRecord } from '@rampart/shared/api';
import { globalsOf, withExamples } from '../command.js';
import { withClient } from '../connection.js';
import { color, output, printTable, shortTime } from '../output.js';
import { positiveInt } from './fleet-common.js';
import { enrollmentPolicyCommand } from './enrollment-policy.js';

const TOKEN_ENV = 'RAMPART_AGENT_ENROLLMENT_TOKEN';
const EST_PLACEHOLDER = 'https://<rampart-host>:8444/.well-known/est';

/** Quote for a POSIX shell when needed. */
function sh(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** How a device uses a new token: rampart-agent, or openssl and curl by hand. Ready to paste. */
export function enrollmentExample(created: CreatedEnrollmentToken): string {
  const id = sh(created.deviceId);
  const est = created.estUrl ?? EST_PLACEHOLDER;
  return [
    'on the device, with ca.pem = the root CA certificate (rampart ca certificate root-1 --out ca.pem):',
    '',
    `  ${TOKEN_ENV}=${sh(created.token)} rampart-agent enroll --est-url ${est} --ca ca.pem --device-id ${id}`,
    '',
    'or by hand with openssl and curl:',
    '',
    `  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout device.key -subj /CN=${id} -outform DER | openssl base64 > device.csr`,
    `  curl --fail-with-body --cacert ca.pem --user ${sh(`${created.deviceId}:${created.token}`)} -H 'Content-Type: application/pkcs10' --data-binary @device.csr ${est}/simpleenroll | openssl base64 -d | openssl pkcs7 -inform DER -print_certs -out device.pem`,
    '',
  ].join('\n');
}

function stateText(state: string): string {
  return state === 'unused' ? color.green(state) : state === 'used' ? state : color.yellow(state);
}

export function enrollmentCommand(): Command {
  const enrollment = new Command('enrollment').description(
    'Device enrollment: policies that decide who may enroll, and one-time tokens for devices without a birth certificate',
  );
  const token = new Command('token').description('One-time enrollment tokens: create, list, revoke');
  enrollment.addCommand(token);

  token.addCommand(
    withExamples(
      new Command('create')
        .description('Create a one-time enrollment token for a registered device; the secret is printed once')
        .requiredOption('--device <id>', 'the device id in the registry (rampart device create)')
        .option('--expires <duration>', 'lifetime such as 1h, 30m or 7d (at most 366d)', '1h')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<{ device: string; expires: string }>(cmd);
          const created = await withClient(o, (c) =>
            c.post<CreatedEnrollmentToken>('/api/v1/enrollment-tokens', {
              deviceId: o.device,
              expiresIn: o.expires,
            }),
          );
          output(o, created, (t) => {
            process.stdout.write(
              `created enrollment token ${color.bold(t.id)} for device ${color.bold(t.deviceId)} (single use, expires ${t.expiresAt})\n\n` +
                `  ${t.token}\n\n` +
                color.dim('store it now: it is not shown again.\n\n') +
                enrollmentExample(t),
            );
          });
        }),
      [
        'rampart enrollment token create --device dw-0001',
        'rampart enrollment token create --device dw-0001 --expires 7d --json | jq -r .token > token.txt',
      ],
    ),
  );

  token.addCommand(
    withExamples(
      new Command('list')
        .description('List enrollment tokens, newest first (never their secrets)')
        .option('--device <id>', 'only tokens of this device')
        .option('--limit <n>', 'at most this many (1-1000)', (v) => positiveInt(v, '--limit', 1000))
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<{ device?: string; limit?: number }>(cmd);
          const { items } = await withClient(o, (c) =>
            c.get<{ items: EnrollmentTokenRecord[] }>('/api/v1/enrollment-tokens', {
              device: o.device,
              limit: o.limit,
            }),
          );
          output(o, items, (rows) =>
            printTable(
              rows,
              [
                ['ID', (r) => r.id],
                ['DEVICE', (r) => r.deviceId],
                ['STATE', (r) => stateText(r.state)],
                ['CREATED', (r) => shortTime(r.createdAt)],
                ['EXPIRES', (r) => shortTime(r.expiresAt)],
                ['USED', (r) => shortTime(r.usedAt)],
                ['CERTIFICATE', (r) => r.usedFor],
                ['CREATED BY', (r) => r.createdBy],
              ],
              'no enrollment tokens',
            ),
          );
        }),
      [
        'rampart enrollment token list',
        'rampart enrollment token list --device dw-0001 --json | jq -r \'.[] | select(.state == "unused") | .id\'',
      ],
    ),
  );

  token.addCommand(
    withExamples(
      new Command('revoke')
        .description('Revoke an unused enrollment token at once')
        .argument('<id>', 'token id, as shown by `rampart enrollment token list`')
        .action(async (id: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const record = await withClient(o, (c) =>
            c.delete<EnrollmentTokenRecord>(`/api/v1/enrollment-tokens/${encodeURIComponent(id)}`),
          );
          output(o, record, (r) =>
            process.stdout.write(`revoked enrollment token ${r.id} of device ${r.deviceId}\n`),
          );
        }),
      ['rampart enrollment token revoke 3k9x0a7m2q1z'],
    ),
  );
  enrollment.addCommand(enrollmentPolicyCommand());
  return enrollment;
}
