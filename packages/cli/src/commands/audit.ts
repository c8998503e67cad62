import { Command, Option } from 'commander';
import { createReadStream, createWriteStream, existsSync, readFileSync, type WriteStream } from 'node:fs';
import { hostname } from 'node:os';

import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AuditEntry,
  canonicalJson,
  formatSyslog,
  publicKeyFromPem,
  verifyAuditChain,
  type AuditCheckpoint,
  type AuditVerification,
  type StoredAuditEntry,
} from '@rampart/shared/audit';
import type { AuditEntryList } from '@rampart/shared/api';
import { fieldErrors } from '@rampart/shared/schema';
import { loadServer } from '../server.js';
import { globalsOf, withExamples } from '../command.js';
import { dataDirOf, withClient, type ApiClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { color, output, printJson, printJsonLine, progress, type Progress } from '../output.js';
import { openSyslogSink } from '../syslog-sink.js';

interface VerifyOptions {
  publicKey?: string;
  checkpoints?: string;
  file?: string;
}

function readJsonLines<T>(path: string): AsyncIterable<{ line: number; value: T }> {
  const rl = createInterface({ input: createReadStream(path, 'utf8'), crlfDelay: Infinity });
  return (async function* () {
    let line = 0;
    for await (const text of rl) {
      line++;
      if (!text.trim()) continue;
      try {
        yield { line, value: JSON.parse(text) as T };
      } catch {
        throw new CliError(`${path}:${line} is not valid JSON`, EXIT.usage);
      }
    }
  })();
}

/** Entries of a JSON-lines export, with details re-canonicalized exactly as they were hashed. */
async function* entriesFromExport(path: string, bar: Progress): AsyncGenerator<StoredAuditEntry> {
  for await (const { line, value } of readJsonLines<AuditEntry>(path)) {
    const errors = fieldErrors(AuditEntry, value);
    if (errors.length)
      throw new CliError(
        `${path}:${line} is not an audit entry: ${errors[0]!.field} ${errors[0]!.message}`,
        EXIT.usage,
      );
    bar.increment();
    yield { ...value, detailsJson: canonicalJson(value.details) };
  }
}

async function* counted<T>(source: AsyncIterable<T>, bar: Progress): AsyncGenerator<T> {
  for await (const item of source) {
    bar.increment();
    yield item;
  }
}

function printVerification(v: AuditVerification & { queuedEntries?: number }, keySource: string): void {
  const out = process.stdout;
  if (v.queuedEntries) {
    out.write(
      color.yellow(
        `${v.queuedEntries} committed entries are still queued, not yet chained: Rampart chains them when it next starts\n`,
      ),
    );
  }
  if (v.ok) {
    out.write(
      `${color.green('audit log verified')}: ${v.entries} entries, chain intact, ` +
        `${v.checkpoints.verified} of ${v.checkpoints.total} signed checkpoints valid (key ${v.keyId?.slice(0, 16) ?? 'none'}… from ${keySource})\n`,
    );
    if (v.unanchoredEntries > 0) {
      out.write(
        color.dim(
          `${v.unanchoredEntries} newest entries are chained but not yet covered by a signed checkpoint\n`,
        ),
      );
    }
    return;
  }
  out.write(
    `${color.red('audit log FAILED verification')}: first bad entry is ${color.bold(String(v.firstBad!.seq))}\n`,
  );
  for (const p of v.problems) out.write(`  entry ${p.seq}: ${p.message}\n`);
}

export function auditCommand(): Command {
  const audit = new Command('audit').description(
    'The tamper-evident audit log: verify it offline, follow it, export it to a SIEM',
  );

  audit.addCommand(
    withExamples(
      new Command('verify')
        .description(
          'Check the whole hash chain and every signed checkpoint, offline, and name the first bad entry',
        )
        .option(
          '--public-key <file>',
          'PEM public key that signs checkpoints (default <data-dir>/audit-checkpoint.pub.pem); keep a copy away from the server',
        )
        .option(
          '--checkpoints <file>',
          'extra checkpoints saved elsewhere (JSON lines), e.g. from `rampart audit checkpoints --json`',
        )
        .option('--file <export.jsonl>', 'verify a JSON-lines export instead of the database')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<VerifyOptions>(cmd);
          const { AuditLog, databaseUrlOf, dataFiles, loadServerConfig, openStorage } = await loadServer();
          const dataDir = dataDirOf(o);
          const keyPath = o.publicKey ?? dataFiles(dataDir).auditPublicKey;
          if (!existsSync(keyPath)) {
            throw new CliError(`no checkpoint public key at ${keyPath}`, EXIT.usage, [
              'pass --public-key FILE or --data-dir of the platform',
            ]);
          }
          const publicKey = publicKeyFromPem(readFileSync(keyPath, 'utf8'));
          const extra: AuditCheckpoint[] = [];
          if (o.checkpoints)
            for await (const { value } of readJsonLines<AuditCheckpoint>(o.checkpoints)) extra.push(value);

          let result: AuditVerification & { queuedEntries?: number };
          if (o.file) {
            const bar = progress('verifying', 0, o);
            result = await verifyAuditChain(entriesFromExport(o.file, bar), {
              checkpoints: extra,
              publicKey,
            });
            bar.stop();
          } else {
            const config = loadServerConfig({ file: o.config, flags: { dataDir } }).config;
            const url = databaseUrlOf(config);
            if (url.startsWith('sqlite:') && !existsSync(url.slice('sqlite:'.length))) {
              throw new CliError(`no Rampart database at ${url.slice('sqlite:'.length)}`, EXIT.usage, [
                'pass the --data-dir that `rampart up` used',
              ]);
            }
            const storage = await openStorage(url, { migrate: false, readonly: url.startsWith('sqlite:') });
            try {
              const log = new AuditLog(storage, null, { readonly: true });
              const head = await log.head();
              const bar = progress('verifying', head.seq, o);
              result = await verifyAuditChain(counted(log.stored(), bar), {
                checkpoints: [...(await log.checkpoints()), ...extra],
                publicKey,
              });
              result.queuedEntries = await log.queued();
              bar.stop();
            } finally {
              await storage.close();
            }
          }
          output(o, result, (v) => printVerification(v, keyPath));
          if (!result.ok) process.exitCode = EXIT.failed;
        }),
      [
        'rampart audit verify --data-dir ./rampart-data',
        'rampart audit verify --public-key /secure/audit-checkpoint.pub.pem --json',
        'rampart audit verify --file audit-2026-11.jsonl --public-key audit-checkpoint.pub.pem',
      ],
    ),
  );

  audit.addCommand(
    withExamples(
      new Command('tail')
        .description('Show the newest audit entries; --follow keeps printing new ones')
        .option('-n, --lines <n>', 'how many entries to show', '20')
        .option('-f, --follow', 'keep waiting for new entries')
        .option('--action <action>', 'only this action, or a prefix such as device.*')
        .option('--actor <actor>', 'only this actor, e.g. token:3k9x0a7m2q1z')
        .addOption(
          new Option('--outcome <outcome>', 'only this outcome').choices(['success', 'failure', 'denied']),
        )
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<{
            lines: string;
            follow?: boolean;
            action?: string;
            actor?: string;
            outcome?: string;
          }>(cmd);
          const n = Number(o.lines);
          if (!Number.isInteger(n) || n < 0 || n > 10_000)
            throw new CliError('--lines must be a whole number up to 10000', EXIT.usage);
          const filter = { action: o.action, actor: o.actor, outcome: o.outcome };
          const print = (e: AuditEntry) => {
            if (o.json) printJsonLine(e);
            else {
              const outcome =
                e.outcome === 'success'
                  ? color.green(e.outcome)
                  : e.outcome === 'denied'
                    ? color.red(e.outcome)
                    : color.yellow(e.outcome);
              process.stdout.write(
                `${color.dim(String(e.seq).padStart(6))} ${e.time} ${outcome.padEnd(7)} ${e.actor} ${color.bold(e.action)} ${e.target}\n`,
              );
            }
          };
          await withClient(o, async (c) => {
            const latest = await c.get<AuditEntryList>('/api/v1/audit/entries', {
              ...filter,
              limit: Math.max(n, 1),
              order: 'desc',
            });
            const shown = latest.items.slice(0, n).reverse();
            shown.forEach(print);
            if (!o.follow) return;
            let after = latest.head.seq;
            let stop = false;
            process.once('SIGINT', () => (stop = true));
            while (!stop) {
              await sleep(1000);
              const page = await c.get<AuditEntryList>('/api/v1/audit/entries', {
                ...filter,
                after,
                limit: 1000,
              });
              page.items.forEach(print);
              after = page.items.length
                ? page.items[page.items.length - 1]!.seq
                : Math.max(after, page.head.seq);
            }
          });
        }),
      [
        'rampart audit tail',
        'rampart audit tail -n 100 --action token.*',
        'rampart audit tail --follow --outcome denied',
      ],
    ),
  );

  audit.addCommand(
    withExamples(
      new Command('export')
        .description(
          'Export entries as JSON lines or RFC 5424 syslog, to standard output, a file or a syslog collector',
        )
        .addOption(
          new Option('--format <format>', 'output format').choices(['jsonl', 'syslog']).default('jsonl'),
        )
        .option('-o, --output <file>', 'write to this file instead of standard output')
        .option(
          '--to <collector>',
          'send to a syslog collector: udp://host:514, tcp://host:514 or tls://host:6514 (implies --format syslog)',
        )
        .option('--collector-ca <file>', 'CA certificate of a tls:// collector')
        .option('--after <seq>', 'only entries after this sequence number (resume an earlier export)', '0')
        .option('-f, --follow', 'keep exporting new entries as they are appended')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<{
            format: string;
            output?: string;
            to?: string;
            collectorCa?: string;
            after: string;
            follow?: boolean;
          }>(cmd);
          if (o.output && o.to) throw new CliError('use either --output or --to, not both', EXIT.usage);
          const format = o.to ? 'syslog' : o.format;
          const host = hostname();
          const render = (e: AuditEntry) =>
            format === 'syslog' ? formatSyslog(e, { hostname: host }) : JSON.stringify(e);
          let after = Number(o.after);
          if (!Number.isInteger(after) || after < 0)
            throw new CliError('--after must be a sequence number', EXIT.usage);

          const sink = o.to ? await openSyslogSink(o.to, { ca: o.collectorCa }) : null;
          const file: WriteStream | null = o.output
            ? createWriteStream(o.output, { flags: after > 0 ? 'a' : 'w', mode: 0o600 })
            : null;
          const write = async (line: string) => {
            if (sink) await sink.send(line);
            else if (file) {
              if (!file.write(line + '\n')) await new Promise<void>((r) => file.once('drain', () => r()));
            } else process.stdout.write(line + '\n');
          };
          let exported = 0;
          await withClient(o, async (c: ApiClient) => {
            const first = await c.get<AuditEntryList>('/api/v1/audit/entries', { after, limit: 1 });
            const bar = progress('exporting', Math.max(first.head.seq - after, 0), { json: !(file || sink) });
            let stop = false;
            process.once('SIGINT', () => (stop = true));
            while (!stop) {
              const page = await c.get<AuditEntryList>('/api/v1/audit/entries', { after, limit: 5000 });
              for (const e of page.items) {
                await write(render(e));
                exported++;
              }
              bar.increment(page.items.length);
              if (page.items.length) after = page.items[page.items.length - 1]!.seq;
              if (page.items.length < 5000) {
                if (!o.follow) break;
                await sleep(1000);
              }
            }
            bar.stop();
          });
          await sink?.close();
          if (file) await new Promise<void>((r) => file.end(() => r()));
          if (o.output || o.to) {
            const summary = { exported, lastSeq: after, destination: o.output ?? o.to, format };
            if (o.json) printJson(summary);
            else
              process.stderr.write(
                `exported ${exported} entries (through seq ${after}) to ${summary.destination} as ${format}\n`,
              );
          }
        }),
      [
        'rampart audit export > audit.jsonl',
        'rampart audit export --format syslog -o audit.log',
        'rampart audit export --to udp://siem.example.net:514 --follow',
        'rampart audit export --after 12000 -o audit.jsonl   # append what is new since seq 12000',
      ],
    ),
  );

  audit.addCommand(
    withExamples(
      new Command('checkpoints')
        .description(
          'List signed checkpoints; save them away from the server to strengthen later verification',
        )
        .action(async (_o, cmd: Command) => {
          const o = globalsOf(cmd);
          const body = await withClient(o, (c) =>
            c.get<{ items: AuditCheckpoint[]; publicKeyPem: string | null }>('/api/v1/audit/checkpoints'),
          );
          if (o.json) {
            for (const c of body.items) printJsonLine(c);
            return;
          }
          for (const c of body.items)
            process.stdout.write(
              `#${c.id} ${c.time} entries 1..${c.entryCount} head ${c.headHash.slice(0, 16)}… key ${c.keyId.slice(0, 16)}…\n`,
            );
        }),
      ['rampart audit checkpoints --json >> /secure/rampart-checkpoints.jsonl'],
    ),
  );
  return audit;
}
