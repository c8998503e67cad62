import { X509Certificate, createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { CliError, EXIT } from '../errors.js';

/**
 * Files the provisioning commands read and write: keys, certificates, manifests, transcripts.
 * Every failure is a usage error (exit 2) that names the file.
 */

/** The text of `path` (`-` reads standard input). */
export function readText(path: string, what: string): string {
  try {
    return readFileSync(path === '-' ? 0 : path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CliError(
      `cannot read ${what} ${path}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
      EXIT.usage,
    );
  }
}

/** One JSON value from `path`. */
export function readJson(path: string, what: string): unknown {
  const text = readText(path, what);
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new CliError(`${what} ${path} is not valid JSON: ${(err as Error).message}`, EXIT.usage);
  }
}

/**
 * A public key from a PEM file. A private key is refused rather than used: it has no business on
 * the machine that talks to the platform, and the public half is one openssl call away.
 */
export function readPublicKey(path: string, flag: string): KeyObject {
  const text = readText(path, 'public key');
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text))
    throw new CliError(`${path} holds a private key; ${flag} takes the public key only`, EXIT.usage, [
      `extract it with: openssl pkey -in ${path} -pubout -out public.pem`,
    ]);
  try {
    return createPublicKey(text);
  } catch {
    throw new CliError(`${path} is not a PEM public key`, EXIT.usage, [
      'expected "-----BEGIN PUBLIC KEY-----" (SubjectPublicKeyInfo)',
    ]);
  }
}

/** An X.509 certificate from a PEM or DER file. */
export function readCertificate(path: string): X509Certificate {
  let data: Buffer;
  try {
    data = readFileSync(path === '-' ? 0 : path);
  } catch (err) {
    throw new CliError(`cannot read certificate ${path}: ${(err as Error).message}`, EXIT.usage);
  }
  try {
    return new X509Certificate(data);
  } catch {
    throw new CliError(`${path} is not an X.509 certificate (PEM or DER)`, EXIT.usage);
  }
}

export const sha256Hex = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** SHA-256 (lowercase hex) of a public key's SubjectPublicKeyInfo, DER. */
export function spkiSha256(key: KeyObject): string {
  return sha256Hex(key.export({ type: 'spki', format: 'der' }));
}

const existsAlready = (path: string) =>
  new CliError(`${path} exists already; choose another file or remove it first`, EXIT.usage);

/** Refuse early when `path` exists: files written here are never overwritten. */
export function mustNotExist(path: string): void {
  if (existsSync(path)) throw existsAlready(path);
}

/**
 * Produce files that must all be new: each is created exclusively (nothing is overwritten, even in
 * a race) before `produce` runs — so a side effect such as registering a station or issuing a
 * certificate only happens when its output can be kept — then filled with the texts `produce`
 * returns, in order. If anything fails, every file created here is removed again.
 */
export async function intoNewFiles<T>(
  files: readonly { path: string; mode: number }[],
  produce: () => Promise<{ value: T; texts: string[] }>,
): Promise<T> {
  const opened: { path: string; fd: number }[] = [];
  const cleanUp = () => {
    for (const o of opened) {
      closeSync(o.fd);
      rmSync(o.path, { force: true });
    }
    opened.length = 0;
  };
  try {
    for (const f of files) {
      try {
        opened.push({ path: f.path, fd: openSync(f.path, 'wx', f.mode) });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw existsAlready(f.path);
        throw new CliError(`cannot write ${f.path}: ${(err as Error).message}`, EXIT.usage);
      }
    }
    const { value, texts } = await produce();
    try {
      opened.forEach((o, i) => writeFileSync(o.fd, texts[i] ?? ''));
    } catch (err) {
      throw new CliError(
        `cannot write ${files.map((f) => f.path).join(', ')}: ${(err as Error).message}`,
        EXIT.failed,
      );
    }
    for (const o of opened) closeSync(o.fd);
    opened.length = 0;
    return value;
  } finally {
    cleanUp();
  }
}

/** Write files that must all be new (see {@link intoNewFiles}). */
export async function writeNewFiles(
  files: readonly { path: string; text: string; mode: number }[],
): Promise<void> {
  await intoNewFiles(files, async () => ({ value: undefined, texts: files.map((f) => f.text) }));
}
