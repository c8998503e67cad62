import { createPublicKey, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { writeFileAtomic } from '../identity/files.js';
import { join } from 'node:path';
import { AgentError } from '../errors.js';
import { runTpm2 } from './tpm-tools.js';
import type { TrustAnchor } from './trust-anchor.js';

export interface TpmTrustAnchorOptions {
  /** Where the TPM-wrapped key blobs live (only this TPM can load them). */
  dir: string;
  /** The TSS2 TCTI: `device:/dev/tpmrm0` on a device, `swtpm:host=127.0.0.1,port=2321` for swtpm. */
  tcti: string;
  /**
   * Persistent handle of the storage primary key the identity key is created under. Created (ECC
   * P-256, owner hierarchy) and made persistent on first use if the TPM has none there.
   */
  parentHandle?: number;
  /** Time limit of one tpm2-tools command. Default 30 s. */
  timeoutMs?: number;
}

/** The storage root key's handle in the TCG provisioning guidance. */
export const DEFAULT_PARENT_HANDLE = 0x81000001;

const PUBLIC_BLOB = 'tpm-key.pub';
const PRIVATE_BLOB = 'tpm-key.priv';

/**
 * A TPM 2.0 trust anchor through tpm2-tools: the identity key (ECDSA P-256, `fixedtpm|fixedparent`)
 * is created inside the TPM and never leaves it; the agent keeps only the TPM-wrapped blobs, which
 * no other TPM can load. Signing loads the key, signs the SHA-256 digest inside the TPM and flushes
 * it again, one command at a time (a TPM has few object slots, and without a resource manager, as
 * with swtpm, nothing else frees them).
 *
 * Mutual TLS with the TPM key needs a TLS provider that signs in the TPM; until the agent has one,
 * `tlsKey()` is null, so enrollment with a token works and renewal and the gateway connection say
 * that they need it. Written on tpm2-tools rather than a TSS binding: no maintained Node.js binding
 * of the TSS exists, and tpm2-tools is what device images ship.
 */
export class TpmTrustAnchor implements TrustAnchor {
  readonly kind = 'tpm';
  readonly strength = 'hardware' as const;
  private readonly parent: string;
  private readonly timeoutMs: number;
  private publicKeyObject: KeyObject | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: TpmTrustAnchorOptions) {
    this.parent = `0x${(options.parentHandle ?? DEFAULT_PARENT_HANDLE).toString(16)}`;
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  private get pubFile(): string {
    return join(this.options.dir, PUBLIC_BLOB);
  }

  private get privFile(): string {
    return join(this.options.dir, PRIVATE_BLOB);
  }

  async ensureKey(): Promise<KeyObject> {
    return this.exclusive(async () => {
      if (!existsSync(this.pubFile) || !existsSync(this.privFile)) {
        mkdirSync(this.options.dir, { recursive: true, mode: 0o700 });
        await this.ensureParent();
        await this.withScratch(async (scratch) => {
          await this.tpm('tpm2_create', [
            '-C',
            this.parent,
            '-G',
            'ecc256:ecdsa-sha256',
            '-a',
            'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign',
            '-u',
            join(scratch, 'key.pub'),
            '-r',
            join(scratch, 'key.priv'),
          ]);
          // Each written whole; the private one last, since a key counts as present when both are.
          writeFileAtomic(this.pubFile, readFileSync(join(scratch, 'key.pub')), 0o600);
          writeFileAtomic(this.privFile, readFileSync(join(scratch, 'key.priv')), 0o600);
        });
      }
      return this.loadPublic();
    });
  }

  async publicKey(): Promise<KeyObject | null> {
    if (this.publicKeyObject) return this.publicKeyObject;
    if (!existsSync(this.pubFile) || !existsSync(this.privFile)) return null;
    return this.exclusive(() => this.loadPublic());
  }

  /** Null: the key cannot leave the TPM (see the class comment). */
  async tlsKey(): Promise<KeyObject | null> {
    return null;
  }

  async sign(data: Uint8Array): Promise<Buffer> {
    if (!existsSync(this.pubFile) || !existsSync(this.privFile))
      throw new AgentError(
        'TRUST_ANCHOR',
        'the device has no identity key in the TPM yet; run: rampart-agent identity init',
      );
    return this.exclusive(() =>
      this.withScratch(async (scratch) => {
        const message = join(scratch, 'message');
        const signature = join(scratch, 'signature');
        writeFileSync(message, data);
        await this.withLoadedKey(scratch, (ctx) =>
          this.tpm('tpm2_sign', ['-c', ctx, '-g', 'sha256', '-f', 'plain', '-o', signature, message]),
        );
        return readFileSync(signature);
      }),
    );
  }

  private async loadPublic(): Promise<KeyObject> {
    if (this.publicKeyObject) return this.publicKeyObject;
    const der = await this.withScratch(async (scratch) => {
      const out = join(scratch, 'public.der');
      await this.withLoadedKey(scratch, (ctx) =>
        this.tpm('tpm2_readpublic', ['-c', ctx, '-f', 'der', '-o', out]),
      );
      return readFileSync(out);
    });
    const key = createPublicKey({ key: der, format: 'der', type: 'spki' });
    if (key.asymmetricKeyDetails?.namedCurve !== 'prime256v1')
      throw new AgentError('TRUST_ANCHOR', `the TPM key in ${this.options.dir} is not an ECDSA P-256 key`);
    this.publicKeyObject = key;
    return key;
  }

  /** Load the key under its parent, run `fn` with its context file, and flush it whatever happens. */
  private async withLoadedKey(scratch: string, fn: (ctx: string) => Promise<unknown>): Promise<void> {
    const ctx = join(scratch, 'key.ctx');
    await this.tpm('tpm2_load', ['-C', this.parent, '-u', this.pubFile, '-r', this.privFile, '-c', ctx]);
    try {
      await fn(ctx);
    } finally {
      await this.flushTransient();
    }
  }

  /**
   * Flush every transient object. Safe: operations run one at a time, and nothing else of the
   * agent's is transient. (A context file written by tpm2_load is not accepted by flushcontext.)
   */
  private flushTransient(): Promise<unknown> {
    return this.tpm('tpm2_flushcontext', ['-t']).catch(() => undefined);
  }

  /** The storage primary at the parent handle, created and made persistent when missing. */
  private async ensureParent(): Promise<void> {
    const present = await this.tpm('tpm2_readpublic', ['-c', this.parent]).then(
      () => true,
      () => false,
    );
    if (present) return;
    await this.withScratch(async (scratch) => {
      const ctx = join(scratch, 'primary.ctx');
      await this.tpm('tpm2_createprimary', ['-C', 'o', '-g', 'sha256', '-G', 'ecc256', '-c', ctx]);
      try {
        await this.tpm('tpm2_evictcontrol', ['-C', 'o', '-c', ctx, this.parent]);
      } finally {
        await this.flushTransient();
      }
    });
  }

  private async withScratch<T>(fn: (dir: string) => Promise<T>): Promise<T> {
    mkdirSync(this.options.dir, { recursive: true, mode: 0o700 });
    const dir = mkdtempSync(join(this.options.dir, '.tpm-'));
    try {
      return await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  /** One TPM operation at a time. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private tpm(tool: string, args: string[]): Promise<string> {
    return runTpm2(tool, args, this.options.tcti, this.timeoutMs);
  }
}
