import { Command, Option } from 'commander';
import {
  ROLES,
  ROLE_DESCRIPTIONS,
  ROLE_PERMISSIONS,
  PERMISSIONS,
  type Permission,
} from '@rampart/shared/access';
import type { CreatedToken, TokenRecord, Whoami } from '@rampart/shared/api';
import { globalsOf, withExamples } from '../command.js';
import { withClient } from '../connection.js';
import { color, output, printTable } from '../output.js';

export function tokenCommand(): Command {
  const token = new Command('token').description(
    'API tokens: create, list, revoke; roles and their permissions',
  );

  token.addCommand(
    withExamples(
      new Command('create')
        .description('Create an API token; the secret is printed once')
        .addOption(new Option('--role <role>', 'role of the token').choices([...ROLES]).makeOptionMandatory())
        .option('--name <name>', 'what the token is for', 'cli')
        .option('--expires <duration>', 'lifetime such as 30d, 12h or 2w (default: no expiry)')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<{ role: string; name: string; expires?: string }>(cmd);
          const created = await withClient(o, (c) =>
            c.post<CreatedToken>('/api/v1/tokens', {
              name: o.name,
              role: o.role,
              ...(o.expires ? { expiresIn: o.expires } : {}),
            }),
          );
          output(o, created, ({ token: secret, record }) => {
            process.stdout.write(
              `created token ${color.bold(record.id)} (role ${record.role}, ${record.expiresAt ? `expires ${record.expiresAt}` : 'no expiry'})\n\n` +
                `  ${secret}\n\n` +
                color.dim(
                  'store it now: it is not shown again. Use it with RAMPART_TOKEN=<token> or --token.\n',
                ),
            );
          });
        }),
      [
        'rampart token create --role operator --name ci-deploy --expires 30d',
        'TOKEN=$(rampart token create --role auditor --json | jq -r .token)',
      ],
    ),
  );

  token.addCommand(
    withExamples(
      new Command('list')
        .description('List tokens (never their secrets)')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf(cmd);
          const { items } = await withClient(o, (c) => c.get<{ items: TokenRecord[] }>('/api/v1/tokens'));
          output(o, items, (rows) =>
            printTable(rows, [
              ['ID', (r) => r.id],
              ['NAME', (r) => r.name],
              ['ROLE', (r) => r.role],
              ['STATE', (r) => (r.state === 'active' ? color.green(r.state) : color.yellow(r.state))],
              ['CREATED', (r) => r.createdAt],
              ['EXPIRES', (r) => r.expiresAt],
              ['LAST USED', (r) => r.lastUsedAt],
            ]),
          );
        }),
      ['rampart token list', 'rampart token list --json | jq -r \'.[] | select(.state=="active") | .id\''],
    ),
  );

  token.addCommand(
    withExamples(
      new Command('revoke')
        .description('Revoke a token at once (its record is kept for the audit trail)')
        .argument('<id>', 'token id, as shown by `rampart token list`')
        .action(async (id: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const record = await withClient(o, (c) =>
            c.delete<TokenRecord>(`/api/v1/tokens/${encodeURIComponent(id)}`),
          );
          output(o, record, (r) =>
            process.stdout.write(`revoked token ${r.id} (${r.name}, role ${r.role})\n`),
          );
        }),
      ['rampart token revoke 3k9x0a7m2q1z'],
    ),
  );

  token.addCommand(
    withExamples(
      new Command('whoami')
        .description('Show the token in use and what it may do')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf(cmd);
          const me = await withClient(o, (c) => c.get<Whoami>('/api/v1/whoami'));
          output(o, me, (w) =>
            process.stdout.write(
              `token ${w.tokenId} (${w.name}), role ${w.role}\npermissions: ${w.permissions.join(', ')}\n`,
            ),
          );
        }),
      ['RAMPART_TOKEN=rpt_... rampart token whoami'],
    ),
  );

  token.addCommand(
    withExamples(
      new Command('roles')
        .description('Show every role and the permissions it grants (works offline)')
        .action((_o, cmd: Command) => {
          const o = globalsOf(cmd);
          const roles = ROLES.map((r) => ({
            role: r,
            description: ROLE_DESCRIPTIONS[r],
            permissions: [...ROLE_PERMISSIONS[r]],
          }));
          output(o, { roles, permissions: PERMISSIONS }, () => {
            printTable(roles, [
              ['ROLE', (r) => r.role],
              ['DESCRIPTION', (r) => r.description],
            ]);
            process.stdout.write('\n');
            printTable(Object.keys(PERMISSIONS) as Permission[], [
              ['PERMISSION', (p) => p],
              ...ROLES.map((r): [string, (p: Permission) => unknown] => [
                r.toUpperCase(),
                (p) => (ROLE_PERMISSIONS[r].includes(p) ? 'yes' : ''),
              ]),
            ]);
          });
        }),
      ['rampart token roles', 'rampart token roles --json'],
    ),
  );
  return token;
}
