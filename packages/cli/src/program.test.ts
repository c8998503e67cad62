import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildProgram } from './program.js';

function leaves(cmd: Command, path: string[] = []): { path: string; cmd: Command }[] {
  const here = [...path, cmd.name()];
  if (cmd.commands.length === 0) return [{ path: here.join(' '), cmd }];
  return cmd.commands.flatMap((c) => leaves(c, here));
}

/** The text `--help` prints, including text added after the options. */
function helpOf(cmd: Command): string {
  let out = '';
  cmd.configureOutput({ writeOut: (s) => (out += s), writeErr: (s) => (out += s) });
  cmd.outputHelp();
  return out;
}

describe('the rampart command tree', () => {
  const all = leaves(buildProgram());

  it('follows `rampart <capability> <verb>`', () => {
    expect(all.map((l) => l.path)).toEqual(
      expect.arrayContaining([
        'rampart up',
        'rampart token create',
        'rampart device list',
        'rampart audit verify',
        'rampart ca status',
        'rampart ca init',
        'rampart ca root export',
        'rampart cert revoke',
        'rampart enrollment token create',
        'rampart enrollment policy create',
        'rampart enrollment policy claim-certificate',
        'rampart station register',
        'rampart station revoke',
        'rampart manufacturer add',
        'rampart batch import',
        'rampart attestation reference add',
        'rampart attestation settings',
        'rampart transcript verify',
        'rampart transcript key',
        'rampart device trace',
        'rampart device attestation',
        'rampart device transcript',
        'rampart device decommission',
        'rampart device reprovision',
        'rampart policy lint',
        'rampart policy simulate',
      ]),
    );
  });

  it.each(all.map((l) => [l.path, l.cmd] as const))(
    '%s has a description and --help with examples',
    (_path, cmd) => {
      expect(cmd.description().length).toBeGreaterThan(10);
      const help = helpOf(cmd);
      expect(help).toMatch(/Examples:\n\s+\$ .*rampart /);
      expect(help).toContain('--json');
    },
  );
});
