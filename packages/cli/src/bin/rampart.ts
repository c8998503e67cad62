#!/usr/bin/env node
import { CommanderError } from 'commander';
import { SharedError } from '@rampart/shared/errors';
import { buildProgram } from '../program.js';
import { loadServer } from '../server.js';
import { CliError, EXIT } from '../errors.js';
import { color } from '../output.js';

function fail(message: string, code: number, hints: readonly string[] = []): never {
  process.stderr.write(`${color.red('error:')} ${message}\n`);
  for (const h of hints) process.stderr.write(`  ${h}\n`);
  process.exit(code);
}

const program = buildProgram();
(function override(cmd: typeof program) {
  cmd.exitOverride();
  cmd.commands.forEach(override);
})(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and version are successes; everything else commander reports is a usage error.
    if (
      err.code === 'commander.helpDisplayed' ||
      err.code === 'commander.version' ||
      err.code === 'commander.help'
    )
      process.exit(EXIT.ok);
    process.exit(err.exitCode === 0 ? EXIT.ok : EXIT.usage);
  }
  if (err instanceof CliError) fail(err.message, err.exitCode, err.hints);
  const { RampartError } = await loadServer();
  if (err instanceof RampartError) fail(err.message, err.code === 'CONFLICT' ? EXIT.conflict : EXIT.failed);
  if (err instanceof SharedError) fail(err.message, EXIT.usage);
  fail((err as Error)?.stack ?? String(err), EXIT.failed);
}
