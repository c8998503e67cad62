#!/usr/bin/env node
import { createHash } from 'node:crypto';
import { Command, CommanderError } from 'commander';
import { SharedError } from '@rampart/shared/errors';
import { trustAnchorFor } from '../anchor.js';
import { loadAgentConfig } from '../config.js';
import { AgentError } from '../errors.js';

interface Globals {
  config?: string;
  dataDir?: string;
  json?: boolean;
}

function configOf(cmd: Command) {
  const o = cmd.optsWithGlobals() as Globals;
  return { opts: o, config: loadAgentConfig({ file: o.config, flags: { dataDir: o.dataDir } }).config };
}

async function describeIdentity(cmd: Command, create: boolean) {
  const { opts, config } = configOf(cmd);
  const anchor = trustAnchorFor(config);
  const key = create ? await anchor.ensureKey() : await anchor.publicKey();
  const info = key
    ? {
        trustAnchor: anchor.kind,
        strength: anchor.strength,
        publicKeyFingerprint: createHash('sha256')
          .update(key.export({ type: 'spki', format: 'der' }))
          .digest('hex'),
        publicKeyPem: key.export({ type: 'spki', format: 'pem' }) as string,
      }
    : null;
  if (opts.json) process.stdout.write(JSON.stringify(info, null, 2) + '\n');
  else if (!info) process.stdout.write('no identity key yet; run: rampart-agent identity init\n');
  else
    process.stdout.write(
      `trust anchor: ${info.trustAnchor} — ${info.strength}\nkey sha256: ${info.publicKeyFingerprint}\n${info.publicKeyPem}`,
    );
  if (!info) process.exitCode = 1;
}

const program = new Command('rampart-agent')
  .description('Rampart device agent: holds the device identity and talks to the platform')
  .option('--config <file>', 'agent config file (YAML or JSON); or RAMPART_AGENT_CONFIG')
  .option('--data-dir <dir>', 'agent state directory (default ./rampart-agent); or RAMPART_AGENT_DATA_DIR')
  .option('--json', 'machine-readable JSON output')
  .configureHelp({ showGlobalOptions: true })
  .addHelpText(
    'after',
    '\nExamples:\n  $ rampart-agent identity init --data-dir /var/lib/rampart-agent\n  $ rampart-agent identity show --json\n',
  );

const identity = program.command('identity').description('The device identity key in its trust anchor');
identity
  .command('init')
  .description(
    'Create the identity key inside the trust anchor (no-op when it exists) and show its fingerprint',
  )
  .addHelpText('after', '\nExamples:\n  $ rampart-agent identity init\n')
  .action((_o, cmd: Command) => describeIdentity(cmd, true));
identity
  .command('show')
  .description('Show the trust anchor and the public key fingerprint; exit 1 when there is no key')
  .addHelpText('after', '\nExamples:\n  $ rampart-agent identity show --json\n')
  .action((_o, cmd: Command) => describeIdentity(cmd, false));

program
  .command('config')
  .description('Show the configuration in effect')
  .addHelpText('after', '\nExamples:\n  $ RAMPART_AGENT_DATA_DIR=/data rampart-agent config --json\n')
  .action((_o, cmd: Command) => {
    const { config } = configOf(cmd);
    process.stdout.write(JSON.stringify(config, null, 2) + '\n');
  });

program.exitOverride();
for (const c of [program, identity, ...program.commands, ...identity.commands]) c.exitOverride();
try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  if (err instanceof SharedError || err instanceof AgentError) {
    process.stderr.write(`error: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
}
