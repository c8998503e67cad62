import { createPublicKey, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { Command } from 'commander';
import { TRANSCRIPT_FORMAT, keyIdOf, signatureProblem } from '@rampart/shared/provisioning';
import { globalsOf, withExamples } from '../command.js';
import { dataDirOf, withClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { color, output, printJson } from '../output.js';
import { readText, writeNewFiles } from './files.js';

/** Where `rampart up` leaves the public key that signs provisioning transcripts. */
export const TRANSCRIPT_KEY_FILE = 'transcript-signing.pub.pem';

export interface TranscriptCheck {
  /** Position in the file, from 1. */
  index: number;
  id: string | null;
  deviceId: string | null;
  decision: string | null;
  time: string | null;
  policy: string | null;
  valid: boolean;
  /** What failed, when not valid. */
  problem: string | null;
}

export interface TranscriptVerification {
  valid: boolean;
  file: string;
  key: { file: string; keyId: string };
  transcripts: TranscriptCheck[];
}

/**
 * The transcripts in a file: one JSON object, a JSON array of them, or JSON lines (one per line),
 * as `rampart device transcript` and the API write them.
 */
export function parseTranscripts(text: string, file: string): unknown[] {
  const trimmed = text.trim();
  if (!trimmed) throw new CliError(`${file} is empty`, EXIT.usage);
  let whole: unknown;
  let parsed = false;
  try {
    whole = JSON.parse(trimmed);
    parsed = true;
  } catch {
    // JSON lines, then
  }
  if (parsed) {
    if (Array.isArray(whole)) {
      if (whole.length === 0) throw new CliError(`${file} holds an empty list`, EXIT.usage);
      return whole;
    }
    if (typeof whole === 'object' && whole !== null) return [whole];
    throw new CliError(
      `${file} holds no transcript: expected a JSON object, an array or JSON lines`,
      EXIT.usage,
    );
  }
  const docs: unknown[] = [];
  for (const [i, line] of text.split(/\r?\n/).entries()) {
    if (!line.trim()) continue;
    try {
      docs.push(JSON.parse(line));
    } catch {
      throw new CliError(
        `${file}:${i + 1} is not valid JSON: expected one transcript, a JSON array or JSON lines`,
        EXIT.usage,
      );
    }
  }
  return docs;
}

function str(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

/** Check each transcript's signature with `key`; any edit, or another signer, makes it invalid. */
export function verifyTranscripts(docs: readonly unknown[], key: KeyObject): TranscriptCheck[] {
  return docs.map((doc, i) => {
    const d = (typeof doc === 'object' && doc !== null ? doc : {}) as Record<string, unknown>;
    const policy = d.policy as { name?: unknown; version?: unknown } | undefined;
    let problem = signatureProblem(doc, key);
    if (!problem && d.format !== TRANSCRIPT_FORMAT)
      problem = `it is signed by the transcript key but is not a provisioning transcript (format ${JSON.stringify(d.format)})`;
    return {
      index: i + 1,
      id: str(d.id),
      deviceId: str(d.deviceId),
      decision: str(d.decision),
      time: str(d.time),
      policy: policy && typeof policy.name === 'string' ? `${policy.name}@${String(policy.version)}` : null,
      valid: problem === null,
      problem,
    };
  });
}

function readKey(path: string, hint: string): KeyObject {
  const pem = readText(path, 'transcript signing key');
  try {
    return createPublicKey(pem);
  } catch {
    throw new CliError(`${path} is not a PEM public key`, EXIT.usage, [hint]);
  }
}

function printVerification(v: TranscriptVerification): void {
  const out = process.stdout;
  const many = v.transcripts.length > 1;
  for (const t of v.transcripts) {
    const label = (t.id ?? `#${t.index}`) + (many && t.id ? ` (#${t.index})` : '');
    if (t.valid)
      out.write(
        `${color.green('valid')}    ${label}: device ${color.bold(t.deviceId ?? '-')}, ${t.decision ?? '-'} at ${t.time ?? '-'}` +
          (t.policy ? ` (policy ${t.policy})` : '') +
          '\n',
      );
    else out.write(`${color.red('INVALID')}  ${label}: ${t.problem}\n`);
  }
  const bad = v.transcripts.filter((t) => !t.valid).length;
  const n = v.transcripts.length;
  const summary =
    bad === 0
      ? `${n === 1 ? 'the transcript is' : `all ${n} transcripts are`} valid`
      : `${bad} of ${n} transcript${n === 1 ? '' : 's'} failed verification`;
  out.write(color.dim(`${summary} (key ${v.key.keyId.slice(0, 16)}… from ${v.key.file})\n`));
}

/** `rampart transcript`: provisioning transcripts, checked offline. */
export function transcriptCommand(): Command {
  const transcript = new Command('transcript').description(
    'Signed provisioning transcripts: verify them offline, fetch the key that signs them',
  );

  transcript.addCommand(
    withExamples(
      new Command('verify')
        .description(
          "Check transcripts' signatures offline: exit 0 when every one is valid, 1 naming what failed on any edit",
        )
        .argument(
          '<file>',
          'one transcript (JSON), a JSON array of them or JSON lines; - reads standard input',
        )
        .option(
          '--key <file>',
          `the transcript signing public key, PEM (default <data-dir>/${TRANSCRIPT_KEY_FILE})`,
        )
        .addHelpText(
          'after',
          `
Nothing is sent anywhere: the check needs only the file and the public key. Get the key once from
a trusted channel (rampart transcript key --out FILE) and keep it apart from the transcripts.`,
        )
        .action((file: string, _o, cmd: Command) => {
          const o = globalsOf<{ key?: string }>(cmd);
          const keyFile = o.key ?? join(dataDirOf(o), TRANSCRIPT_KEY_FILE);
          const key = readKey(
            keyFile,
            'get it with: rampart transcript key --out transcript-signing.pub.pem',
          );
          const docs = parseTranscripts(readText(file, 'transcripts'), file);
          const checks = verifyTranscripts(docs, key);
          const result: TranscriptVerification = {
            valid: checks.every((c) => c.valid),
            file,
            key: { file: keyFile, keyId: keyIdOf(key) },
            transcripts: checks,
          };
          output(o, result, printVerification);
          if (!result.valid) process.exitCode = EXIT.failed;
        }),
      [
        'rampart transcript verify gw-0001.transcript.json --key transcript-signing.pub.pem',
        'rampart device transcript gw-0001 --all | rampart transcript verify - --json',
        'rampart transcript verify transcripts.jsonl --data-dir ./rampart-data',
      ],
    ),
  );

  transcript.addCommand(
    withExamples(
      new Command('key')
        .description(
          'Fetch the public key that signs provisioning transcripts (PEM), for verifiers elsewhere',
        )
        .option('-o, --out <file>', 'write it to this new file instead of standard output')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<{ out?: string }>(cmd);
          const pem = await withClient(o, (c) => c.get<string>('/api/v1/provisioning/transcript-key'));
          let keyId: string;
          try {
            keyId = keyIdOf(createPublicKey(pem));
          } catch {
            throw new CliError('the platform did not answer with a PEM public key', EXIT.failed);
          }
          if (o.out) await writeNewFiles([{ path: o.out, text: pem, mode: 0o644 }]);
          if (o.json) printJson({ keyId, publicKey: pem, ...(o.out ? { file: o.out } : {}) });
          else if (o.out)
            process.stdout.write(
              `wrote the transcript signing key (key id ${keyId.slice(0, 16)}…) to ${o.out}\n`,
            );
          else process.stdout.write(pem);
        }),
      [
        'rampart transcript key --out transcript-signing.pub.pem',
        'rampart transcript key --json | jq -r .keyId',
      ],
    ),
  );
  return transcript;
}
