import { Command } from 'commander';
import { VERSION } from './version.js';
import { addGlobalOptions } from './command.js';
import { auditCommand } from './commands/audit.js';
import { configCommand } from './commands/config.js';
import { tokenCommand } from './commands/token.js';
import { upCommand } from './commands/up.js';
import { fleetCommands } from './commands/fleet.js';
import { caCommand } from './commands/ca.js';
import { certCommand } from './commands/cert.js';
import { enrollmentCommand } from './commands/enrollment.js';

/** `rampart <capability> <verb>`: one command tree for everything the console can do. */
export function buildProgram(): Command {
  const program = addGlobalOptions(new Command('rampart'))
    .description(
      'Rampart: hardware-rooted identity, policy-gated connectivity and signed updates for device fleets',
    )
    .version(VERSION, '-V, --version')
    .showHelpAfterError('(run with --help for usage and examples)')
    .configureHelp({ showGlobalOptions: true, sortSubcommands: false });

  program.addCommand(upCommand());
  program.addCommand(tokenCommand());
  for (const c of fleetCommands()) program.addCommand(c);
  program.addCommand(caCommand());
  program.addCommand(certCommand());
  program.addCommand(enrollmentCommand());
  program.addCommand(auditCommand());
  program.addCommand(configCommand());

  program.addHelpText(
    'after',
    `
Connecting: commands that talk to a running Rampart use --url/--token/--ca (or RAMPART_URL,
RAMPART_TOKEN, RAMPART_CA), otherwise the files \`rampart up\` leaves in --data-dir (./rampart-data).

Exit codes: 0 ok, 1 failed, 2 usage or invalid input, 3 Rampart unreachable,
4 authentication or permission refused, 5 not found, 6 conflict.

Examples:
  $ rampart up
  $ rampart token create --role operator --expires 30d
  $ rampart device list --query 'model = "DW100" and attributes.region = "eu"'
  $ rampart enrollment token create --device dw-0001
  $ rampart cert revoke 3A:9F:01:77 --reason key-compromise
  $ rampart audit verify --data-dir ./rampart-data
`,
  );
  // Every command's --help also lists the global options (--json, --url, --token, ...).
  (function showGlobals(cmd: Command) {
    cmd.configureHelp({ showGlobalOptions: true });
    cmd.commands.forEach(showGlobals);
  })(program);
  return program;
}
