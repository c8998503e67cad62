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
import { policyCommand } from './commands/policy.js';
import { simCommand } from './commands/sim.js';
import { factoryCommand } from './commands/factory.js';
import { batchCommand, manufacturerCommand, stationCommand } from './commands/manufacturing.js';
import { attestationCommand } from './commands/attestation.js';
import { transcriptCommand } from './commands/transcript.js';
import { releaseCommand } from './commands/release.js';
import { deployCommand } from './commands/deploy.js';

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
  program.addCommand(factoryCommand());
  program.addCommand(stationCommand());
  program.addCommand(manufacturerCommand());
  program.addCommand(batchCommand());
  program.addCommand(attestationCommand());
  program.addCommand(transcriptCommand());
  program.addCommand(policyCommand());
  program.addCommand(releaseCommand());
  program.addCommand(deployCommand());
  program.addCommand(simCommand());
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
  $ rampart factory provision --station-dir /srv/station --batch 2026-11-a --device-dir /mnt/dut --id dw-0001 --serial SN-1 --model DW100
  $ rampart station register line-1 --public-key station.pub.pem --out line-1.station.json
  $ rampart manufacturer add acme-modules --certificate acme-idevid-ca.pem
  $ rampart batch import b-2026-11-a.manifest.json
  $ rampart attestation settings DW100 --require --no-admit-software
  $ rampart transcript verify gw-0001.transcript.json --key transcript-signing.pub.pem
  $ rampart cert revoke 3A:9F:01:77 --reason key-compromise
  $ rampart release create build/sensor-fw.bin --version 1.4.2 --model DW100
  $ rampart deploy create DW100/sensor-fw-1.4.2.bin --group eu-sensors --canary 5% --rate 10/min --abort-at 20%
  $ rampart policy simulate --device dw-0001 --action publish --topic devices/dw-0001/x
  $ rampart sim --devices 100 --profile normal=8,crashy=1,compromised=1
  $ rampart audit verify --data-dir ./rampart-data
`,
  );
  letLeafOwnVersionOption(program);
  // Every command's --help also lists the global options (--json, --url, --token, ...).
  (function showGlobals(cmd: Command) {
    cmd.configureHelp({ showGlobalOptions: true });
    cmd.commands.forEach(showGlobals);
  })(program);
  return program;
}

/**
 * Commander recognises the root's options anywhere on the command line, so `-V, --version` would
 * swallow the `--version <n>` of a subcommand (`rampart policy show NAME --version 2`). When the
 * command being run defines `--version` itself, leave it to that command.
 */
function letLeafOwnVersionOption(program: Command): void {
  const HIDDEN = '\u0000--version';
  const parse = program.parseOptions.bind(program);
  program.parseOptions = (args: string[]) => {
    const start = args.findIndex((a) => program.commands.some((c) => c.name() === a));
    if (start < 0) return parse(args);
    let leaf: Command | undefined = program.commands.find((c) => c.name() === args[start]);
    for (let i = start + 1; leaf && i < args.length; i++) {
      const next: Command | undefined = leaf.commands.find((c) => c.name() === args[i]);
      if (!next) break;
      leaf = next;
    }
    if (!leaf?.options.some((o) => o.long === '--version')) return parse(args);
    const result = parse(args.map((a, i) => (i > start && a === '--version' ? HIDDEN : a)));
    // Subcommands parse only the unknown part for options: hand it over from `--version` on.
    const cut = result.operands.indexOf(HIDDEN);
    const operands = cut < 0 ? result.operands : result.operands.slice(0, cut);
    const unknown = [...(cut < 0 ? [] : result.operands.slice(cut)), ...result.unknown];
    return { operands, unknown: unknown.map((a) => (a === HIDDEN ? '--version' : a)) };
  };
}
