import { createHash } from 'node:crypto';
import type { ArtifactStore } from './store.js';

/** Artifacts larger than this share of the cache are always streamed from the store. */
const LARGEST_SHARE = 4;

/**
 * The artifacts being downloaded right now, in memory: in a rollout every device fetches the same
 * few images, and serving them from memory spares an open, a dozen reads and a close per request.
 * Bounded by `maxBytes` in total (least recently served leaves first); an artifact larger than a
 * quarter of that is never kept. Content-addressed, so what is kept never goes stale. Each artifact
 * is checked against its address when loaded: bytes that changed on disk are refused, not served.
 */
export class HotArtifacts {
  private readonly kept = new Map<string, Buffer>();
  private readonly loading = new Map<string, Promise<Buffer | null>>();
  private bytes = 0;

  constructor(
    private readonly store: ArtifactStore,
    private readonly maxBytes: number,
  ) {}

  /** Bytes held now. */
  get size(): number {
    return this.bytes;
  }

  /**
   * The whole artifact from memory (loading it on first use), or null when it is not to be kept
   * (too large, cache off, absent). Throws when the stored bytes do not have their SHA-256.
   */
  async get(sha256: string, size: number): Promise<Buffer | null> {
    const hit = this.kept.get(sha256);
    if (hit) {
      // Most recently served goes last: eviction takes from the front.
      this.kept.delete(sha256);
      this.kept.set(sha256, hit);
      return hit;
    }
    if (this.maxBytes <= 0 || size > this.maxBytes / LARGEST_SHARE) return null;
    let pending = this.loading.get(sha256);
    if (!pending) {
      pending = this.load(sha256).finally(() => this.loading.delete(sha256));
      this.loading.set(sha256, pending);
    }
    return pending;
  }

  private async load(sha256: string): Promise<Buffer | null> {
    const stream = this.store.open(sha256);
    if (!stream) return null;
    const parts: Buffer[] = [];
    const hash = createHash('sha256');
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      parts.push(chunk);
      hash.update(chunk);
    }
    if (hash.digest('hex') !== sha256)
      throw new Error(`the stored artifact ${sha256} does not have that SHA-256: it changed on disk`);
    const data = Buffer.concat(parts);
    if (!this.kept.has(sha256)) {
      this.kept.set(sha256, data);
      this.bytes += data.length;
      for (const [key, value] of this.kept) {
        if (this.bytes <= this.maxBytes) break;
        this.kept.delete(key);
        this.bytes -= value.length;
      }
    }
    return data;
  }
}
